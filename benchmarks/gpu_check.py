"""GPU check: the ``full`` profile end to end at tiny step counts on one GPU (issue 18, item 7).

What it runs, every model at the profile's size on one device, under the process's ``--precision``
(``auto``: bf16 autocast + TF32 on a GPU with bf16):

1. the query encoder (``full``: ImageBind-Huge from ``--imagebind`` / ``$MARS_IMAGEBIND``, else **random
   weights** of the same architecture built on the GPU: no download; ``smoke``/``cpu``: the profile's MiniBind);
2. query embeddings of every item through all three towers (text prompts, images, the items' clips), composed
   with Query-Mixup weights as in training;
3. ``--warmup + --steps`` supervised steps (:func:`mars_core.supervised.trainer.train_step`: the trainer's own
   step, weighted BCE, Adam, clipping) on synthetic mixtures (as ``bench_train_step.py``; no benchmark build);
4. ``--warmup + --steps`` RL steps of the ``plus`` preset (old-policy refresh, rollout with G masks per item,
   their waveforms, one reward-encoder call, group advantages, the PPO epochs; as ``bench_rl_step.py``) with a
   reward stack of that encoder and an untrained MLBP anchor;
5. bf16 against fp32 (:func:`mars_core.precision.precision_scope`): the mask ``P`` of one batch (max abs
   difference; the separator re-initialised with He-normal convolutions so that ``P`` is not 1/2 everywhere, as
   it is at the reference init) and the reward of that batch's waveforms (cosines and ``R``, max abs difference).

It prints one ``name: value`` line per field of :data:`REPORT_FIELDS`. Steps per second are medians over
``--steps``, at ``--precision`` and again in strict fp32 (``*_fp32``: no autocast, no TF32; the RL step's
separator passes are fp32 in both, only its reward encoder autocasts); peak GPU memory is
``torch.cuda.max_memory_allocated`` over each phase (ImageBind-Huge's weights, 4.0 GiB in fp32, included).
Target: under 8 minutes on one H100. **Not yet run on a GPU.**

    bash benchmarks/gpu_check.sh                                  # full, on the GPU
    python benchmarks/gpu_check.py --profile full --batch 8 --steps 5
    python benchmarks/gpu_check.py --allow-cpu --profile smoke    # the code paths only, on a CPU (CI)

Without CUDA it stops (exit status 2) unless ``--allow-cpu --profile smoke``; on a CPU autocast is a no-op, so
the "bf16" side equals fp32 and every agreement is exactly 0 (``tests/test_gpu_check.py`` checks that).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_train_step as bts  # noqa: E402

from mars_core.alignment.anchor import MLBPAnchor  # noqa: E402
from mars_core.alignment.stack import RewardStack  # noqa: E402
from mars_core.audio import FrontEnd  # noqa: E402
from mars_core.config import get_profile, rl_preset  # noqa: E402
from mars_core.device import DeviceError, describe_device, resolve_device  # noqa: E402
from mars_core.encoders.imagebind import ImageBind  # noqa: E402
from mars_core.encoders.load import add_imagebind_argument, load_query_encoder, use_imagebind_argument  # noqa: E402
from mars_core.precision import PRECISIONS, PrecisionError, apply_precision, autocast, precision_scope  # noqa: E402
from mars_core.query_mixup import compose, mixup_weights  # noqa: E402
from mars_core.rl.advantages import EMABaseline  # noqa: E402
from mars_core.rl.rewards import RewardModel  # noqa: E402
from mars_core.rl.rollout import RLBatch, reconstruct_group, rollout  # noqa: E402
from mars_core.rl.update import advantages, ppo_update  # noqa: E402
from mars_core.rl.update import make_optimizer as rl_optimizer  # noqa: E402
from mars_core.separator import multi_query_logits, new_separator  # noqa: E402
from mars_core.supervised.loss import mask_targets  # noqa: E402
from mars_core.supervised.trainer import make_optimizer, train_step  # noqa: E402

REPORT_FIELDS = (
    "profile", "device", "torch", "precision", "encoder", "encoder_params_M", "separator_params_M", "batch",
    "query_embedding_s", "supervised_steps_per_s", "supervised_steps_per_s_fp32", "supervised_peak_gpu_MB",
    "rl_preset", "rl_steps_per_s", "rl_steps_per_s_fp32", "rl_peak_gpu_MB", "agreement", "mask_P_std",
    "mask_max_abs_diff_P", "reward_min_cos_embedding", "reward_max_abs_diff_cos", "reward_max_abs_diff_R", "total_s",
)
"""The report's fields, in print order (``name: value`` lines)."""
TARGET_S = 480.0
"""The check's time target on one H100 (seconds)."""
PROMPTS = ("a violin", "a dog barking", "a piano", "rain on a roof", "a man speaking", "a trumpet")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="full", help="profile (default full; smoke only with --allow-cpu on a CPU)")
    ap.add_argument("--device", default="auto", help="auto|cuda|cuda:N (a CPU only with --allow-cpu --profile smoke)")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="run on a CPU (only with --profile smoke: CI's check of this script's code paths)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS, help="precision of the timed steps")
    ap.add_argument("--batch", type=int, default=4, help="mixtures per supervised and RL step (default 4)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per phase (default 1)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per phase (default 3)")
    ap.add_argument("--preset", default="plus", help="RL preset (plus or paper)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON here")
    args = add_imagebind_argument(ap).parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        ap.error(f"--batch and --steps must be >= 1 and --warmup >= 0 (got {args.batch}, {args.steps}, {args.warmup})")
    return args


def _refuse(message: str) -> SystemExit:
    """Print ``gpu_check: message`` to stderr; the ``SystemExit`` (status 2) to raise."""
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)
    return SystemExit(2)


def check_device(args: argparse.Namespace) -> torch.device:
    """The CUDA device to run on; a CPU only for ``--allow-cpu --profile smoke``.

    Raises:
        SystemExit: (status 2) no usable GPU, or ``--allow-cpu`` with another profile, naming what to do.
    """
    if args.allow_cpu and args.profile != "smoke":
        raise _refuse(f"--allow-cpu runs only with --profile smoke (got --profile {args.profile}): on a CPU this "
                      "script only tests its own code paths; the full-size check needs a CUDA GPU")
    try:
        dev = resolve_device(args.device)
    except DeviceError as err:
        raise _refuse(str(err)) from err
    if dev.type != "cuda" and not args.allow_cpu:
        raise _refuse(f"it checks the GPU path and needs a CUDA device (--device {args.device} gives {dev}; torch "
                      f"{torch.__version__}, CUDA build {torch.version.cuda}). On a CPU only "
                      "'--allow-cpu --profile smoke' runs, to test this script's code paths.")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (cpu)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"


def build_encoder(profile, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The profile's query/reward encoder on ``device`` (eval, frozen) and a few words saying which.

    ``full`` without ``$MARS_IMAGEBIND``: ImageBind-Huge with random weights, built directly on the device
    (never the 4.5 GB download :func:`load_query_encoder` would start).
    """
    if profile.encoder.kind == "imagebind":
        path = os.environ.get("MARS_IMAGEBIND")
        if path:
            enc, what = load_query_encoder(profile), f"ImageBind-Huge, official weights ({path})"
        else:
            with torch.device(device):
                enc = ImageBind("huge", modalities=("vision", "text", "audio"))
            what = "ImageBind-Huge, RANDOM weights (MARS_IMAGEBIND not set)"
    else:
        enc, what = load_query_encoder(profile), f"MiniBind ({profile.name})"
    return enc.to(device).eval().requires_grad_(False), what


def synthetic_data(profile, batch_mixtures: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """:func:`bench_train_step.synthetic_batch`'s mixtures (the queries are made by :func:`embed_queries`).

    Shape: ``sources (B, K, samples)``, ``mixture (B, samples)``.
    """
    data = bts.synthetic_batch(profile, batch_mixtures, device, seed)
    return {"sources": data["sources"], "mixture": data["mixture"]}


def embed_queries(enc, profile, sources: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Text, image and audio embeddings of every item (item ``n = b K + k``) through the encoder's three towers.

    Prompts cycle through :data:`PROMPTS`, images are seeded random RGB, the audio query of an item is its own
    clean source. Shape: sources ``(B, K, samples)``; returns ``{"text", "image", "audio"}`` each ``(B K, D)``.
    """
    n = sources.shape[0] * sources.shape[1]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    sr = profile.audio.sample_rate
    return {"text": enc.embed_text([PROMPTS[i % len(PROMPTS)] for i in range(n)]),
            "image": enc.embed_image(images),
            "audio": enc.embed_audio(sources.reshape(n, -1), sr, resample=sr != enc.sample_rate)}


def supervised_batch(profile, fe: FrontEnd, data: dict, queries: torch.Tensor) -> dict[str, torch.Tensor]:
    """What :func:`mars_core.supervised.trainer.training_batch` returns, from synthetic mixtures and given queries.

    Shape: features, mix_mag ``(B, 1, F, T)``; queries ``(B, K, D)``; targets ``(B, K, F, T)``.
    """
    mix_w = fe.warp(fe.stft(data["mixture"]).abs())
    src_w = fe.warp(fe.stft(data["sources"]).abs())
    return {"features": torch.log(mix_w + 1e-10).unsqueeze(1), "queries": queries,
            "targets": mask_targets(src_w, mix_w.unsqueeze(1), "ibm"), "mix_mag": mix_w.unsqueeze(1)}


def timed(step, warmup: int, steps: int, device: torch.device) -> float:
    """Median seconds of ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for i in range(warmup):
        step(i)
        _sync(device)
    times = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        step(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def supervised_phase(profile, model, batch: dict, args, device: torch.device) -> dict[str, str]:
    cfg = replace(profile.supervised, batch_mixtures=args.batch)
    opt, sched = make_optimizer(model, cfg)
    history = {"step": [], "loss": [], "lr": [], "grad_norm": []}
    _reset_peak(device)
    s = timed(lambda i: train_step(model, opt, sched, batch, cfg, history, i), args.warmup, args.steps, device)
    if not all(np.isfinite(history["loss"])):
        raise _refuse(f"a supervised loss was not finite: {history['loss']}")
    return {"supervised_steps_per_s": f"{1.0 / s:.3f}", "supervised_peak_gpu_MB": _peak_mb(device)}


def rl_phase(profile, model, rl_batch: RLBatch, reward_model: RewardModel, fe: FrontEnd, args,
             device: torch.device) -> dict[str, str]:
    cfg = replace(rl_preset(profile, args.preset), batch_mixtures=args.batch)
    cfg = replace(cfg, minibatches=min(cfg.minibatches, args.batch))
    reward_model = replace(reward_model, lambda_sig=cfg.lambda_sig, lambda_neg=cfg.lambda_neg,
                           batch_size=cfg.reward_batch_size)
    old = copy.deepcopy(model).requires_grad_(False).eval()
    opt = rl_optimizer(model, cfg)
    ema = EMABaseline(cfg.ema_decay)
    losses = []

    def step(i: int) -> None:
        old.load_state_dict(model.state_dict())
        ro = rollout(old, rl_batch, fe, reward_model, cfg.kappa, cfg.group_size, seed=i)
        adv, _ = advantages(ro.rewards.cpu(), cfg, ema)
        losses.append(ppo_update(model, opt, ro, adv, cfg, i)["loss"])

    _reset_peak(device)
    s = timed(step, args.warmup, args.steps, device)
    if not all(np.isfinite(losses)):
        raise _refuse(f"an RL loss was not finite: {losses}")
    return {"rl_preset": f"{cfg.preset} (G={cfg.group_size}, {cfg.ppo_epochs} epochs x {cfg.minibatches} "
                         f"minibatches, trains {cfg.trainable})",
            "rl_steps_per_s": f"{1.0 / s:.3f}", "rl_peak_gpu_MB": _peak_mb(device)}


def lively_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy with He-normal convolutions, in eval mode: at the reference init (N(0, 1e-3)) every logit is
    about 0, ``P`` is 1/2 everywhere and no rounding would show in it."""
    out = copy.deepcopy(model).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, torch.nn.Conv2d):
                std = (2.0 / m.weight[0].numel()) ** 0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
    return out


@torch.no_grad()
def agreement(model, batch: dict, rl_batch: RLBatch, reward_model: RewardModel, fe: FrontEnd,
              device: torch.device) -> dict[str, str]:
    """bf16 (the ``auto`` precision; plain fp32 on a CPU) against strict fp32 on the same inputs: the mask
    ``P`` and the reward of that mask's waveforms (the anchors are the same fp32 tensors on both sides)."""
    lively = lively_copy(model)
    n = rl_batch.n_items
    out = {}
    for word in ("fp32", "auto"):
        with precision_scope(word, device) as what:
            with autocast(device):
                logits = multi_query_logits(lively, batch["features"], batch["queries"])
            P = torch.sigmoid(logits.float())  # (B, K, F, T)
            if word == "fp32":
                wav = reconstruct_group(fe, P, rl_batch.mixtures).reshape(n, -1)  # fp32 waveforms, used twice
            emb = reward_model.embed(wav)
            z_neg = rl_batch.z_neg if reward_model.lambda_neg else None
            refs = rl_batch.sources.reshape(n, -1) if reward_model.lambda_sig else None
            r, terms = reward_model(wav, rl_batch.z, z_neg, refs)
            out[word] = {"P": P, "emb": emb, "cos": terms["semantic"], "R": r, "what": what}
    a, b = out["fp32"], out["auto"]
    compared = f"{b['what']} vs {a['what']}" + (" (autocast is a no-op on a CPU)" if device.type != "cuda" else "")
    return {"agreement": compared,
            "mask_P_std": f"{a['P'].std().item():.4f}",
            "mask_max_abs_diff_P": f"{(a['P'] - b['P']).abs().max().item():.3e}",
            "reward_min_cos_embedding": f"{(a['emb'] * b['emb']).sum(-1).min().item():.6f}",
            "reward_max_abs_diff_cos": f"{(a['cos'] - b['cos']).abs().max().item():.3e}",
            "reward_max_abs_diff_R": f"{(a['R'] - b['R']).abs().max().item():.3e}"}


def run(args: argparse.Namespace) -> dict[str, str]:
    t_start = time.perf_counter()
    device = check_device(args)
    use_imagebind_argument(args.imagebind)
    try:
        precision = apply_precision(args.precision, device)
    except PrecisionError as err:
        raise _refuse(str(err)) from err
    prof = get_profile(args.profile)
    torch.manual_seed(0)
    report = {"profile": prof.name, "device": describe_device(device),
              "torch": f"{torch.__version__} (CUDA build {torch.version.cuda})", "precision": precision}

    enc, what = build_encoder(prof, device)
    report.update(encoder=what, encoder_params_M=f"{sum(p.numel() for p in enc.parameters()) / 1e6:.1f}")
    fe = FrontEnd(prof.audio)
    data = synthetic_data(prof, args.batch, device)
    b, k = data["sources"].shape[:2]
    t0 = time.perf_counter()
    emb = embed_queries(enc, prof, data["sources"])
    _sync(device)
    report["query_embedding_s"] = f"{time.perf_counter() - t0:.2f}"
    weights = mixup_weights(np.random.default_rng(0), b * k)
    queries = compose(emb, "mixup", weights).float().reshape(b, k, -1)

    start = new_separator(prof, 0).to(device)
    report["separator_params_M"] = f"{sum(p.numel() for p in start.parameters()) / 1e6:.1f}"
    report["batch"] = f"{b} mixtures x {k} sources"
    batch = supervised_batch(prof, fe, data, queries)
    with precision_scope("fp32", device):  # the same steps in strict fp32, from the same weights, for the speed-up
        fp32 = supervised_phase(prof, copy.deepcopy(start).train(), batch, args, device)
    model = copy.deepcopy(start).train()
    report.update(supervised_phase(prof, model, batch, args, device))
    report["supervised_steps_per_s_fp32"] = fp32["supervised_steps_per_s"]

    stack = RewardStack(enc, MLBPAnchor(enc.embed_dim, 64).to(device).eval(), aligned=False, key="gpu-check")
    z = stack.target_anchor(emb["audio"], emb["text"], emb["image"]).float()  # (B K, D)
    z3 = z.reshape(b, k, -1)
    z_neg = torch.stack([z3[:, [j for j in range(k) if j != i]] for i in range(k)], dim=1)  # (B, K, K - 1, D)
    z_neg = z_neg.reshape(b * k, k - 1, -1)  # each item's interferers' anchors, as rl.rollout.rl_batch makes them
    rl_batch = RLBatch(batch["features"], queries, data["mixture"], data["sources"], z, z_neg)
    reward_model = RewardModel(stack, prof.audio.sample_rate)
    with precision_scope("fp32", device):
        fp32 = rl_phase(prof, copy.deepcopy(model), rl_batch, reward_model, fe, args, device)
    report.update(rl_phase(prof, model, rl_batch, reward_model, fe, args, device))
    report["rl_steps_per_s_fp32"] = fp32["rl_steps_per_s"]

    cfg = rl_preset(prof, args.preset)
    report.update(agreement(model, batch, rl_batch, replace(reward_model, lambda_sig=cfg.lambda_sig,
                                                            lambda_neg=cfg.lambda_neg), fe, device))
    report["total_s"] = f"{time.perf_counter() - t_start:.1f} (target on one H100: under {TARGET_S:.0f})"
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    report = run(args)
    print(f"gpu_check on {bts.machine()}")
    for key in REPORT_FIELDS:
        print(f"{key}: {report[key]}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
