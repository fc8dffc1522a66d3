"""RL sanity check: can the PPO/GRPO update improve ONE fixed training batch?

The classic first debugging step of an RL loop. A fixed batch of training mixtures is rolled out
again and again (fresh mask samples each iteration) and updated with the trainer's own
``ppo_update``; every ``--every`` iterations it prints the sampled masks' mean reward and its terms,
and the SI-SDR (dB) of the deterministic mode ``P`` against the clean targets. If the mode does not
improve even here, training on fresh batches cannot help; if it does, the question is noise across
batches. Starts from the profile's supervised separator with its reward stack.

    python scripts/rl_fixed_batch.py --profile cpu --iters 60 --set trainable=head
    python scripts/rl_fixed_batch.py --profile cpu --iters 60 --set trainable=all
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace

import torch


def main(argv: list[str] | None = None) -> int:
    from mars_core.metrics import si_sdr
    from mars_core.rl.advantages import EMABaseline
    from mars_core.rl.cli import base_parser
    from mars_core.rl.diagnostics import setup_from_args
    from mars_core.rl.rollout import policy_proposal, reconstruct_group, rl_batch, rollout
    from mars_core.rl.trainer import training_data
    from mars_core.rl.update import advantages, make_optimizer, ppo_update

    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args(argv)
    su = setup_from_args(args)
    prof, cfg, fe, reward_model = su.prof, su.cfg, su.fe, su.reward_model
    model = copy.deepcopy(su.separator).eval()
    old = copy.deepcopy(model).requires_grad_(False)
    opt = make_optimizer(model, cfg)
    ds = training_data(prof, replace(cfg, steps=1))
    batch = rl_batch(ds, su.bank, su.rbank, su.stack, fe, 0, cfg.batch_mixtures, cfg.query, cfg.seed, su.device,
                     query_noise=cfg.query_noise, pure_query_prob=cfg.pure_query_prob)
    refs = batch.sources.reshape(batch.n_items, -1)
    ema = EMABaseline(cfg.ema_decay)
    print(f"profile {prof.name}, preset {cfg.preset}, trainable {cfg.trainable}, kappa {cfg.kappa}, G {cfg.group_size}, "
          f"lambda_sig {cfg.lambda_sig}, lr {cfg.lr}: one batch of {batch.n_items} items")
    for it in range(args.iters + 1):
        old.load_state_dict(model.state_dict())
        ro = rollout(old, batch, fe, reward_model, cfg.kappa, cfg.group_size, seed=1000 + it)
        if it % args.every == 0:
            with torch.no_grad():
                P = policy_proposal(model, batch.features, batch.queries)
                mode = reconstruct_group(fe, P.reshape(batch.n_mixtures, -1, *P.shape[-2:]), batch.mixtures)
                mode_db = float(si_sdr(mode.reshape(batch.n_items, -1), refs).mean())
            terms = " ".join(f"{k} {v.mean().item():+.4f}" for k, v in ro.terms.items())
            print(f"iter {it:4d}  sampled reward {ro.rewards.mean().item():+.4f} ({terms})  mode SI-SDR {mode_db:+.3f} dB",
                  flush=True)
        if it < args.iters:
            adv, _ = advantages(ro.rewards.cpu(), cfg, ema)
            ppo_update(model, opt, ro, adv, cfg, it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
