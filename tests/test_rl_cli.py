"""The RL command line (mars_core.rl.__main__): arguments and typed --set overrides."""

from __future__ import annotations

import pytest


def test_cli_parser():
    from mars_core.rl.__main__ import _parser

    args = _parser().parse_args(["--profile", "cpu", "--preset", "paper", "--unaligned", "--steps", "5"])
    assert (args.profile, args.preset, args.unaligned, args.steps) == ("cpu", "paper", True, 5)
    with pytest.raises(SystemExit):
        _parser().parse_args(["--preset", "grpo"])


def test_cli_overrides_are_typed_like_the_field():
    from mars_core.rl.__main__ import parse_overrides

    got = parse_overrides(["lr=1e-4", "trainable=head", "group_size=8", "steps=3"])
    assert got == {"lr": 1e-4, "trainable": "head", "group_size": 8, "steps": 3}
    assert isinstance(got["group_size"], int) and isinstance(got["lr"], float)
    for bad in (["learning_rate=1"], ["lr"], ["group_size=many"]):
        with pytest.raises(SystemExit):
            parse_overrides(bad)
