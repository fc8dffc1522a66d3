"""The learned systems of the benchmark: name -> loader, and the context the loaders share.

The RL trainer and the reward stack are imported inside their loaders on purpose: a system whose
module cannot be imported is reported missing (:func:`load_systems`), not fatal to the run.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

import torch

from ..config import Profile, get_profile, rl_preset
from ..device import to_device
from ..encoders.load import load_judge, load_query_encoder
from ..queries import QueryBank, load_or_build_query_bank
from ..supervised.store import load_or_train


class SystemUnavailable(RuntimeError):
    """A registered system cannot be built here (its module or checkpoint does not exist yet)."""


@dataclass
class SystemModel:
    """A loaded learned system.

    Attributes:
        model: a separator ``model(features, query) -> P`` (a :class:`~mars_core.separator.QuerySeparator`).
        bank: the :class:`~mars_core.queries.QueryBank` its queries come from (``None``: the
            context's default bank, the frozen query encoder's).
        history: its training history (curves), if any.
        source: where it came from (a checkpoint path, a note).
    """

    model: torch.nn.Module
    bank: QueryBank | None = None
    history: dict | None = None
    source: str = ""


@dataclass
class BenchmarkContext:
    """What loaders share: the profile, the data, the default query bank, the judge (each built lazily once).

    Args:
        profile: the profile (or its name).
        build_dir: benchmark build (default: the profile's).
        bank: the default query bank (default: the frozen query encoder's, cached on disk).
        judge: the judge encoder; ``"auto"`` loads :func:`~mars_core.encoders.load.load_judge`, ``None``
            leaves the semantic and contamination scores out.
        progress: show progress bars of loaders and trainers.
        device: where the separators and the judge compute (default: where they load, the CPU);
            estimates and scores come back to the CPU (:func:`~mars_core.evaluation.evaluate.separate`).
    """

    profile: Profile | str | None = None
    build_dir: str | os.PathLike | None = None
    bank: QueryBank | None = None
    judge: Any = "auto"
    progress: bool = True
    device: torch.device | str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.profile = get_profile(self.profile)

    def query_bank(self) -> QueryBank:
        """The default query bank (the frozen query encoder's)."""
        if self.bank is None:
            self.bank = load_or_build_query_bank(load_query_encoder(self.profile), self.profile,
                                                 build_dir=self.build_dir, progress=self.progress)
        return self.bank

    def judge_encoder(self):
        """The judge (or ``None``)."""
        if isinstance(self.judge, str) and self.judge == "auto":
            self.judge = load_judge(self.profile)
            if self.device is not None:
                self.judge = to_device(self.judge, self.device)
        return self.judge

    def supervised(self) -> SystemModel:
        """The supervised separator (:func:`mars_core.supervised.load_or_train`), loaded once."""
        if "supervised" not in self._cache:
            model, history = load_or_train(self.profile, bank=self.query_bank(), build_dir=self.build_dir,
                                           progress=self.progress, device=self.device)
            self._cache["supervised"] = SystemModel(model, None, history, str(history.get("source", "")))
        return self._cache["supervised"]


Loader = Callable[[BenchmarkContext], SystemModel]


def _as_system_model(out: Any, what: str) -> SystemModel:
    """Normalise a loader's return value: a ``SystemModel``, ``(model, history)`` or a model.

    A policy wrapper exposing ``.separator`` is unwrapped (its mode is the separator's ``P``).
    """
    if isinstance(out, SystemModel):
        return out
    history = None
    if isinstance(out, tuple):
        out, history = out[0], (out[1] if len(out) > 1 else None)
    model = getattr(out, "separator", out)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{what} returned {type(out).__name__}, not a separator")
    history = dict(history) if isinstance(history, Mapping) else None
    return SystemModel(model.eval(), None, history, str((history or {}).get("source", what)))


def load_supervised(ctx: BenchmarkContext) -> SystemModel:
    """The supervised baseline (OmniSep-style mix-and-separate with Query-Mixup)."""
    return ctx.supervised()


def load_rl(ctx: BenchmarkContext, preset: str, aligned: bool, seed: int = 0) -> SystemModel:
    """An RL fine-tuned separator from :func:`mars_core.rl.trainer.load_or_train_rl` (imported here, lazily);
    ``seed`` other than 0 trains the preset with ``RLConfig.seed = seed`` (the spread over RL seeds).

    Raises:
        SystemUnavailable: the RL trainer module does not exist (yet).
    """
    try:
        from ..rl.trainer import load_or_train_rl  # here: a missing trainer leaves the system out
    except ImportError as exc:
        raise SystemUnavailable(f"mars_core.rl.trainer.load_or_train_rl is not available ({exc})") from exc
    on = {} if ctx.device is None else {"device": ctx.device}  # None: the trainer's default
    if seed:
        on["config"] = replace(rl_preset(ctx.profile, preset), seed=seed)
    out = load_or_train_rl(ctx.profile, preset, aligned=aligned, progress=ctx.progress, **on)
    return _as_system_model(out, f"load_or_train_rl({ctx.profile.name!r}, {preset!r}, aligned={aligned}, seed={seed})")


def load_aligned_no_rl(ctx: BenchmarkContext) -> SystemModel:
    """The supervised separator asked with queries from the **aligned** encoder (no RL): the paper's
    ablation that collapses, because the separator learned the un-aligned encoder's query space.

    Raises:
        SystemUnavailable: the reward stack module does not exist (yet).
    """
    try:
        from ..alignment.stack import load_reward_stack  # here: a missing stack leaves the system out
    except ImportError as exc:
        raise SystemUnavailable(f"mars_core.alignment.stack.load_reward_stack is not available ({exc})") from exc
    stack = load_reward_stack(ctx.profile, aligned=True, build_dir=ctx.build_dir)
    bank = load_or_build_query_bank(stack.encoder, ctx.profile, build_dir=ctx.build_dir, progress=ctx.progress)
    sup = ctx.supervised()
    return SystemModel(sup.model, bank, sup.history, f"{sup.source}, queried by the aligned encoder {stack.key}")


def load_rl_control(ctx: BenchmarkContext, name: str, **changes: Any) -> SystemModel:
    """A control of the RL claims: the ``plus`` preset with ``changes`` (e.g. ``advantage="none"``: the entropy
    and KL terms only), trained from the same supervised start for the same number of steps.

    Raises:
        SystemUnavailable: the RL trainer does not exist, or RLConfig has no field named in ``changes``.
    """
    try:
        from ..rl.trainer import load_or_train_rl  # here: a missing trainer leaves the system out
    except ImportError as exc:
        raise SystemUnavailable(f"mars_core.rl.trainer.load_or_train_rl is not available ({exc})") from exc
    base = rl_preset(ctx.profile, "plus")
    unknown = [k for k in changes if not hasattr(base, k)]
    if unknown:
        raise SystemUnavailable(f"RLConfig has no field {unknown[0]!r}: the {name!r} control cannot be trained")
    cfg = replace(base, preset=name, **changes)
    on = {} if ctx.device is None else {"device": ctx.device}
    out = load_or_train_rl(ctx.profile, "plus", aligned=True, config=cfg, progress=ctx.progress, **on)
    return _as_system_model(out, f"load_or_train_rl({ctx.profile.name!r}, plus with {changes})")


def load_supervised_continued(ctx: BenchmarkContext) -> SystemModel:
    """The control 'supervised (continued)': the supervised start trained on by supervision with the ``plus``
    preset's budget (as many optimiser updates, the same trainable weights, optimiser and learning rate;
    :func:`mars_core.supervised.continued.continued_config`)."""
    from ..supervised.continued import load_or_continue  # here: like the RL loaders, missing -> left out

    sup = ctx.supervised()
    on = {} if ctx.device is None else {"device": ctx.device}
    model, history = load_or_continue(ctx.profile, sup.model, rl_preset(ctx.profile, "plus"), bank=ctx.query_bank(),
                                      build_dir=ctx.build_dir, progress=ctx.progress, **on)
    return SystemModel(model.eval(), None, history, str(history.get("source", "")))


SYSTEMS: dict[str, Loader] = {
    "supervised": load_supervised,
    "MARS-Sep paper": lambda ctx: load_rl(ctx, "paper", aligned=True),
    "MARS-Sep plus": lambda ctx: load_rl(ctx, "plus", aligned=True),
    "MARS-Sep plus, seed 1": lambda ctx: load_rl(ctx, "plus", aligned=True, seed=1),
    "MARS-Sep plus, seed 2": lambda ctx: load_rl(ctx, "plus", aligned=True, seed=2),
    "RL, un-aligned encoder": lambda ctx: load_rl(ctx, "plus", aligned=False),
    "MARS-Sep dense": lambda ctx: load_rl(ctx, "dense", aligned=True),
    "MARS-Sep dense, seed 1": lambda ctx: load_rl(ctx, "dense", aligned=True, seed=1),
    "MARS-Sep dense, seed 2": lambda ctx: load_rl(ctx, "dense", aligned=True, seed=2),
    "aligned encoder, no RL": load_aligned_no_rl,
    "supervised (continued)": load_supervised_continued,
    "entropy only": lambda ctx: load_rl_control(ctx, "entropy-only", advantage="none"),
    "pathwise": lambda ctx: load_rl_control(ctx, "pathwise", estimator="pathwise"),
}
"""The learned systems, in table order: name -> loader ``(BenchmarkContext) -> SystemModel``."""
SYSTEM_ALIASES = {"supervised": "supervised", "paper": "MARS-Sep paper", "plus": "MARS-Sep plus",
                  "rl-unaligned": "RL, un-aligned encoder", "aligned-no-rl": "aligned encoder, no RL",
                  "plus-seed1": "MARS-Sep plus, seed 1", "plus-seed2": "MARS-Sep plus, seed 2",
                  "continued": "supervised (continued)", "entropy-only": "entropy only", "pathwise": "pathwise",
                  "dense": "MARS-Sep dense", "dense-seed1": "MARS-Sep dense, seed 1",
                  "dense-seed2": "MARS-Sep dense, seed 2"}
"""Short command-line names of :data:`SYSTEMS`."""
SYSTEM_DESCRIPTIONS = {
    "supervised": "separator trained with mix-and-separate + Query-Mixup (notebook 02); the baseline",
    "MARS-Sep paper": "RL from the baseline, paper preset: one sample per item, EMA baseline, one PPO epoch "
                      "(REINFORCE + entropy), semantic reward of the aligned encoder and MLBP anchor",
    "MARS-Sep plus": "RL from the baseline, our preset: G masks per item, group advantages, 2 PPO epochs, "
                     "semantic reward minus a contamination penalty",
    "MARS-Sep plus, seed 1": "the plus preset trained again with RL seed 1 (rollout samples, minibatch order, Query-Mixup"
                             " weights): the spread over seeds",
    "MARS-Sep plus, seed 2": "the plus preset trained again with RL seed 2",
    "RL, un-aligned encoder": "ablation: the plus preset rewarded by the encoder before progressive alignment",
    "MARS-Sep dense": "RL from the baseline, dense preset: plus's GRPO/PPO update rewarded by SI-SDR per time segment "
                      "(64 dense rewards, no semantic term, no entropy or KL term)",
    "MARS-Sep dense, seed 1": "the dense preset trained again with RL seed 1",
    "MARS-Sep dense, seed 2": "the dense preset trained again with RL seed 2",
    "aligned encoder, no RL": "ablation: the supervised separator queried with the aligned encoder's embeddings",
    "supervised (continued)": "control: the supervised start trained on by supervision with plus's budget (updates, "
                              "trainable weights, optimiser, learning rate)",
    "entropy only": "control: the plus preset without its policy gradient (advantage 'none': entropy and KL terms only)",
    "pathwise": "control: the plus preset with the pathwise (reparameterised) gradient of the differentiable SI-SDR "
                "reward (the headroom a low-variance estimator could reach)",
}


def resolve_systems(systems: Iterable[str] | Mapping[str, Loader] | None) -> dict[str, Loader]:
    """A registry: ``None`` -> :data:`SYSTEMS`; a mapping -> itself; names (or aliases) -> their loaders.

    Raises:
        KeyError: an unknown name.
    """
    if systems is None:
        return dict(SYSTEMS)
    if isinstance(systems, Mapping):
        return dict(systems)
    out = {}
    for name in systems:
        full = SYSTEM_ALIASES.get(name, name)
        if full not in SYSTEMS:
            raise KeyError(f"unknown system {name!r}; choose from {list(SYSTEMS)} or {list(SYSTEM_ALIASES)}")
        out[full] = SYSTEMS[full]
    return out


def load_systems(ctx: BenchmarkContext, systems: Iterable[str] | Mapping[str, Loader] | None = None
                 ) -> tuple[dict[str, SystemModel], dict[str, str]]:
    """Run each loader: ``(loaded {name: SystemModel}, missing {name: reason})``.

    A loader raising :class:`SystemUnavailable`, ``ImportError`` or ``FileNotFoundError`` marks its
    system missing, with a warning; any other error propagates.
    """
    loaded, missing = {}, {}
    for name, loader in resolve_systems(systems).items():
        try:
            loaded[name] = _as_system_model(loader(ctx), name)
            if ctx.device is not None:
                to_device(loaded[name].model, ctx.device)
        except (SystemUnavailable, ImportError, FileNotFoundError) as exc:
            missing[name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"benchmark: system {name!r} is missing and left out of the tables: {exc}", stacklevel=2)
    return loaded, missing
