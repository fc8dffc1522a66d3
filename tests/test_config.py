"""Profiles: names, env selection, documented fields, the paper's full-size front end."""

from __future__ import annotations

import dataclasses

import pytest

from mars_core import config
from mars_core.config import AudioConfig, DataConfig, Profile, field_docs, get_profile, profile_table


def test_full_profile_is_the_paper_front_end():
    a = get_profile("full").audio
    assert (a.sample_rate, a.segment_samples, a.n_fft, a.hop_length, a.n_freq_warped) == (16000, 65535, 1024, 256, 256)
    assert (a.n_freq, a.n_frames) == (513, 256)  # 513 x 256 complex STFT, 256 x 256 warped input


@pytest.mark.parametrize("name", config.PROFILE_NAMES)
def test_every_profile_fits_a_7_level_unet(name):
    a = get_profile(name).audio
    # 7 halvings need both sides >= 128 and divisible by 2^7
    assert a.n_freq_warped % 128 == 0 and a.n_frames % 128 == 0


def test_env_var_and_explicit_name(monkeypatch):
    monkeypatch.setenv("MARS_PROFILE", "cpu")
    assert get_profile().name == "cpu"
    assert get_profile("full").name == "full"
    monkeypatch.delenv("MARS_PROFILE")
    assert get_profile().name == "smoke"
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_profile("huge")


def test_profiles_are_frozen():
    p = get_profile("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.audio.sample_rate = 1  # type: ignore[misc]


@pytest.mark.parametrize("cls", [AudioConfig, DataConfig, Profile])
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__} fields without docstring: {missing}"


def test_profile_table_lists_every_leaf():
    df = profile_table("cpu")
    assert {"audio.sample_rate", "data.seed", "audio.n_frames"} <= set(df["field"])
    assert df.loc[df["field"] == "audio.sample_rate", "value"].item() == 8000
    assert (df["doc"].str.len() > 0).all()
