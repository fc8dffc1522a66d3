"""How good is the policy gradient? Compare it with the exact gradient of the quantity we evaluate.

The separator is evaluated with its deterministic mode ``P``, and on one training batch the
exact gradient ``g*`` of the mean SI-SDR of the mode's waveforms with respect to the weights RL
trains can be computed by backpropagation through the iSTFT. The PPO/GRPO gradient is a
sampling estimate of the gradient of the *sampled* masks' expected reward. This script measures,
on one fixed batch and for each concentration ``kappa``:

* ``cos_single``: mean cosine between ``g*`` and the policy gradient of one rollout (what one
  update follows), and ``cos_mean``: the cosine between ``g*`` and the mean of ``--rollouts``
  rollouts' gradients (what many updates follow on average; below 0, the expected update
  lowers the mode's SI-SDR even without noise);
* ``--headroom N``: how far the same trained weights get on val SDR when they follow ``g*``
  itself for N steps on fresh training batches (AdamW, the preset's lr), i.e. what the RL
  fine-tuning could gain if its gradient were exact.

The policy gradient is the first update's (ratio 1, no entropy or KL term), with the preset's
reward (``--set`` overrides any RLConfig field, e.g. ``--set lambda_sig=10``).

    python scripts/rl_gradient_check.py --profile cpu --kappa 30 300 1000
    python scripts/rl_gradient_check.py --profile cpu --kappa 30 300 --set lambda_sig=10 --headroom 200
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from mars_core.data.mixing import MixtureDataset
    from mars_core.rl.cli import base_parser
    from mars_core.rl.diagnostics import cosine, exact_gradient, first_update_gradient, mode_si_sdr, setup_from_args
    from mars_core.rl.rollout import rl_batch
    from mars_core.rl.update import make_optimizer, trainable_parameters
    from mars_core.rl.validation import validate_rl, validation

    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--kappa", type=float, nargs="+", default=[30.0, 300.0, 1000.0])
    ap.add_argument("--rollouts", type=int, default=16, help="rollouts per kappa (fresh mask samples each)")
    ap.add_argument("--headroom", type=int, default=0, help="steps of exact-gradient fine-tuning to run (0: skip)")
    args = ap.parse_args(argv)
    su = setup_from_args(args)
    prof, cfg, bank, fe = su.prof, su.cfg, su.bank, su.fe
    model = copy.deepcopy(su.separator).eval()
    params = trainable_parameters(model, cfg.trainable)
    b = cfg.batch_mixtures
    ds = MixtureDataset("train", prof, n_items=b * max(1, args.headroom), load_images=False)
    batch = rl_batch(ds, bank, su.rbank, su.stack, fe, 0, b, cfg.query, cfg.seed, su.device)
    n = batch.n_items

    g_star, value = exact_gradient(model, params, batch, fe)
    print(f"profile {prof.name}, preset {cfg.preset}, trains {cfg.trainable} ({g_star.numel()} weights), G {cfg.group_size}, "
          f"lambda_sig {cfg.lambda_sig}, lambda_neg {cfg.lambda_neg}: one batch of {n} items, mode SI-SDR {value:.2f} dB")
    rows = []
    for kappa in args.kappa:
        grads = [first_update_gradient(model, params, batch, fe, su.reward_model, kappa, cfg.group_size, seed=10_000 + r,
                                       trainable=cfg.trainable) for r in range(args.rollouts)]
        g = torch.stack(grads)
        single = np.array([cosine(x, g_star) for x in g])
        rows.append({"kappa": kappa, "cos_single": float(single.mean()),
                     "cos_single_se": float(single.std(ddof=1) / np.sqrt(len(single))) if len(single) > 1 else float("nan"),
                     "cos_mean": cosine(g.mean(0), g_star), "rollouts": args.rollouts})
        print(f"kappa {kappa:g}: cos(one rollout's gradient, exact) {rows[-1]['cos_single']:+.3f} "
              f"(+- {rows[-1]['cos_single_se']:.3f} s.e.), cos(mean of {args.rollouts}, exact) "
              f"{rows[-1]['cos_mean']:+.3f}", flush=True)
    if args.headroom:
        rv = validation(prof, bank, min(cfg.val_mixtures, prof.data.n_val_mixtures), judge=None, device=su.device)
        opt = make_optimizer(model, cfg)
        print(f"exact-gradient fine-tuning of the same weights ({cfg.optimizer}, lr {cfg.lr}), val SDR on "
              f"{len(rv.val.queries)} mixtures: step 0 {validate_rl(model, rv, fe)['sdr']:.2f} dB", flush=True)
        for step in range(args.headroom):
            loss = -mode_si_sdr(model, rl_batch(ds, bank, su.rbank, su.stack, fe, step, b, cfg.query, cfg.seed, su.device),
                                fe)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if (step + 1) % cfg.eval_every == 0 or step + 1 == args.headroom:
                print(f"  step {step + 1}: val SDR {validate_rl(model, rv, fe)['sdr']:.2f} dB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
