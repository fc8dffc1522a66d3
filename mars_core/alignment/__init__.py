"""Progressive alignment of the reward encoder, the MLBP target anchor and the reward stack
(docs/method.md sections 5, 7 and 8).

MARS-Sep rewards a separated waveform ``y^`` with ``R = cos(phi_a(y^), z*)``. With an
off-the-shelf encoder the reward barely separates a clean target from the mixture that
contains it (the paper measures a gap of 0.0035), which invites reward hacking. Before RL,
the encoder's **projection heads** (never the backbone) are fine-tuned in three stages.
Only the :class:`~mars_core.encoders.base.TriModalEncoder` interface is used, so it runs
unchanged on MiniBind (offline) and ImageBind-Huge (GPU).

Modules, in the order the method reads:

* :mod:`.config`     the stages (:data:`~.config.STAGES`) and :class:`~.config.AlignmentConfig`;
* :mod:`.losses`     symmetric InfoNCE, cosine triplet, consistency, learnable temperatures;
* :mod:`.embedding`  batches of mixture items and their embeddings, the audio augmentation;
* :mod:`.stages`     the S1 / S2 / S3 objectives (``s1_objective``, ``s2_objective``, ``s3_objective``);
* :mod:`.sampling`   the datasets, the fixed train pool and the seeded batches the stages draw;
* :mod:`.heads`      which parameters are heads, their state and checkpoints, frozen-backbone digests;
* :mod:`.runner`     ``run_stage`` and ``run_alignment`` (S1 -> S2 -> S3, resumable);
* :mod:`.measure`    reward gaps, retrieval and per-term objectives before/after each stage;
* :mod:`.probe`      the reward-hacking probe (silent / mixture / oracle outputs);
* :mod:`.anchor`     the MLBP target anchor z* (and the mean / max fusions);
* :mod:`.anchor_fit` training the MLBP anchor (loss, modality dropout, ``fit_mlbp``);
* :mod:`.stack`      ``load_reward_stack``: aligned encoder + anchor, trained once per profile.
"""
