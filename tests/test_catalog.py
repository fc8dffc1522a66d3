"""The class catalog, its prompts and the committed recipe."""

from __future__ import annotations

import copy
import json

import pytest

from mars_core.data import catalog
from mars_core.data.recipe import load_recipe, recipe_path, validate_recipe

# The class table of the issue, typed out independently of the code.
EXPECTED = {
    "violin": "bowed_strings", "cello": "bowed_strings",
    "trumpet": "brass", "trombone": "brass", "tuba": "brass",
    "flute": "woodwinds", "clarinet": "woodwinds", "saxophone": "woodwinds",
    "acoustic_guitar": "plucked", "banjo": "plucked", "harp": "plucked",
    "xylophone": "percussion", "drums": "percussion",
    "accordion": "free_reed",
    "dog": "animals", "cat": "animals", "bird": "animals",
    "helicopter": "machines", "telephone": "machines",
    "applause": "noise_textures", "seashore": "noise_textures",
    "speech": "speech",
}
# General MIDI level 1 program numbers (0-based) of the sound effects.
GM_EFFECTS = {"seashore": 122, "bird": 123, "telephone": 124, "helicopter": 125, "applause": 126}


def test_class_table_matches_the_issue():
    assert list(catalog.CLASS_NAMES) == list(EXPECTED)
    assert {c.name: c.family for c in catalog.CLASSES} == EXPECTED


def test_kinds():
    kinds = [c.kind for c in catalog.CLASSES]
    assert kinds[:14] == ["instrument"] * 14
    assert kinds[14:21] == ["everyday"] * 7
    assert kinds[21] == "speech"


def test_gm_programs():
    for c in catalog.CLASSES:
        assert all(0 <= p <= 127 for p in c.programs), c.name
        assert c.style in catalog.STYLES
        if c.kind == "instrument":
            assert c.programs, f"{c.name} is an instrument without a GM program"
    for name, program in GM_EFFECTS.items():
        assert catalog.get_class(name).programs == (program,)
    assert catalog.get_class("violin").programs == (40,) and catalog.get_class("cello").programs == (42,)
    assert catalog.get_class("drums").bank == 128
    assert catalog.get_class("dog").programs == () and catalog.get_class("cat").programs == ()


def test_unknown_class_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown class 'kazoo'.*violin"):
        catalog.get_class("kazoo")


def test_prompts_per_class():
    held_out = ["g04", "c03"]
    rows = catalog.prompt_rows(catalog.CLASS_NAMES, held_out)
    for name in catalog.CLASS_NAMES:
        mine = [r for r in rows if r["class_name"] == name]
        assert len(mine) >= 8
        texts = [r["text"] for r in mine]
        assert len(set(texts)) == len(texts), f"duplicate prompt texts for {name}: {texts}"
        assert len({r["template_id"] for r in mine}) == len(mine)
        test_ids = {r["template_id"] for r in mine if r["split_group"] == "test"}
        assert test_ids == set(held_out)
        assert all("{" not in t and "}" not in t for t in texts)
    violin = {r["template_id"]: r["text"] for r in rows if r["class_name"] == "violin"}
    assert violin["g00"] == "the sound of a violin"
    assert {r["text"] for r in rows if r["class_name"] == "applause"} >= {"the sound of applause"}


def test_prompt_rows_rejects_bad_held_out_ids():
    with pytest.raises(ValueError, match="do not exist"):
        catalog.prompt_rows(["violin"], ["z99"])
    all_ids = [tid for tid, _ in catalog.class_templates(catalog.get_class("violin"))]
    with pytest.raises(ValueError, match="both split groups"):
        catalog.prompt_rows(["violin"], all_ids)


def test_class_rows_labels_follow_the_given_order():
    rows = catalog.class_rows(["dog", "violin"])
    assert rows == [
        {"class_name": "dog", "family": "animals", "kind": "everyday", "label": 0},
        {"class_name": "violin", "family": "bowed_strings", "kind": "instrument", "label": 1},
    ]


def test_committed_recipe_lists_the_catalog_in_order():
    recipe = load_recipe()
    assert [c["name"] for c in recipe["classes"]] == list(catalog.CLASS_NAMES)
    assert recipe["min_classes"] >= 18
    assert recipe["soundfonts"]["test_timbre"] != recipe["soundfonts"]["train"]
    assert recipe["split_codes"] == {"train": 0, "val": 1, "test": 2, "test_timbre": 3}
    # test recordings never appear in train (the validator checks all pairs; check here by hand)
    for c in recipe["classes"]:
        recs = c.get("recordings", {})
        assert not set(recs.get("train", [])) & set(recs.get("test", [])), c["name"]


def test_recipe_validation_errors():
    base = json.loads(recipe_path().read_text())
    bad = copy.deepcopy(base)
    dog = next(c for c in bad["classes"] if c["name"] == "dog")
    dog["recordings"]["test"].append("ovos:dog")
    with pytest.raises(ValueError, match="'ovos:dog' is in both train and test"):
        validate_recipe(bad)
    bad = copy.deepcopy(base)
    bad["classes"].append({"name": "kazoo", "soundfont": True})
    with pytest.raises(ValueError, match="kazoo"):
        validate_recipe(bad)
    bad = copy.deepcopy(base)
    bad["classes"].append(copy.deepcopy(bad["classes"][0]))
    with pytest.raises(ValueError, match="duplicate"):
        validate_recipe(bad)
    bad = copy.deepcopy(base)
    next(c for c in bad["classes"] if c["name"] == "cat")["recordings"]["train"] = ["freesound:1234"]
    with pytest.raises(ValueError, match="'freesound:1234' is not"):
        validate_recipe(bad)
    bad = copy.deepcopy(base)
    del bad["quality"]
    with pytest.raises(ValueError, match="quality"):
        validate_recipe(bad)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        load_recipe(tmp_path / "nope.json")
