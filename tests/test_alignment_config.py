"""AlignmentConfig: every field documented, validation, the profiles' weights."""

from __future__ import annotations

import dataclasses

import pytest

from mars_core.alignment.config import AlignmentConfig
from mars_core.config import field_docs
from tests.one_thread import one_thread  # noqa: F401  (autouse: one torch thread for this module)


def test_config_documents_every_field_and_validates():
    docs = field_docs(AlignmentConfig)
    assert {f.name for f in dataclasses.fields(AlignmentConfig)} == set(docs)
    smoke = AlignmentConfig.for_profile("smoke", s2_margin=0.3)
    assert smoke.steps_per_stage < AlignmentConfig().steps_per_stage and smoke.s2_margin == 0.3
    for bad in (dict(s2_triplet_weight=-1), dict(batch_size=1), dict(replay_fraction=-0.1), dict(temperature_init=0)):
        with pytest.raises(ValueError):
            AlignmentConfig(**bad)
    with pytest.raises(ValueError, match="profile"):
        AlignmentConfig.for_profile("huge")


def test_minibind_profiles_lean_on_the_triplets_and_full_keeps_every_term():
    for name in ("smoke", "cpu"):
        c = AlignmentConfig.for_profile(name)
        assert (c.s2_nce_weight, c.s3_nce_weight, c.s2_triplet_weight, c.s3_triplet_weight) == (0.1, 0.0, 1.0, 1.0)
    full = AlignmentConfig.for_profile("full")
    assert (full.s1_nce_weight, full.s2_nce_weight, full.s3_nce_weight) == (1.0, 1.0, 1.0)
