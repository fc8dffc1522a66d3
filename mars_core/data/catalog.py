"""The class catalog: 22 sound classes, their acoustic families, kinds and prompts.

Each class is a :class:`ClassSpec`: its family (acoustically close classes share
one, which the mixture sampler uses for *hard pairs*), its kind (``instrument``:
rendered from General MIDI soundfonts; ``everyday``: soundfont effects and/or real
recordings; ``speech``: human-read speech), the General MIDI programs that play it
and how its phrases are written (``style``, ``note_range``).

Which *material* each class gets in each split (soundfont, recordings) is not
decided here but in the committed recipe ``datasets/recipe.json``. A class's clips
are seeded with its index in :data:`CLASSES` (stable); its label in a build is its
position among the classes that build kept.

Text prompts are built from templates. A template id is unique within a class:
``g..`` generic templates (every class), ``k..`` templates of the class's kind and
``c..`` the class's own phrasings. Which ids are held out for testing is set by the
recipe (``prompts.test_template_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

KINDS = ("instrument", "everyday", "speech")

STYLES = ("sustained", "plucked", "mallet", "drums", "effect_long", "effect_chirp", "recording")
"""How a class's soundfont phrases are written (see ``sources.phrases``); ``recording``: no soundfont."""


@dataclass(frozen=True)
class ClassSpec:
    """One sound class.

    Attributes:
        name: class name (manifests, prompts, images).
        family: acoustic family, e.g. ``bowed_strings``.
        kind: ``instrument``, ``everyday`` or ``speech``.
        programs: General MIDI programs (0-based) that may play it; one is drawn per clip.
        bank: soundfont bank (128 for drum kits, else 0).
        note_range: lowest and highest MIDI key of its phrases.
        style: phrase style, one of :data:`STYLES`.
        a_noun: the class as a noun phrase with its article ("a violin", "applause").
        noun: the bare noun ("violin", "applause").
        phrasings: class-specific prompt texts (template ids ``c00``, ``c01``, ...).
    """

    name: str
    family: str
    kind: str
    programs: tuple[int, ...]
    bank: int
    note_range: tuple[int, int]
    style: str
    a_noun: str
    noun: str
    phrasings: tuple[str, ...]


def _inst(name, family, programs, lo, hi, style, a_noun, noun, phrasings, bank=0) -> ClassSpec:
    return ClassSpec(name, family, "instrument", tuple(programs), bank, (lo, hi), style, a_noun, noun, tuple(phrasings))


def _every(name, family, programs, lo, hi, style, a_noun, noun, phrasings, kind="everyday") -> ClassSpec:
    return ClassSpec(name, family, kind, tuple(programs), 0, (lo, hi), style, a_noun, noun, tuple(phrasings))


CLASSES: tuple[ClassSpec, ...] = (
    _inst("violin", "bowed_strings", [40], 55, 93, "sustained", "a violin", "violin",
          ["a violin playing", "someone bowing a violin", "a solo violin melody", "fiddle music"]),
    _inst("cello", "bowed_strings", [42], 36, 72, "sustained", "a cello", "cello",
          ["a cello playing", "someone bowing a cello", "a deep cello melody", "low bowed strings"]),
    _inst("trumpet", "brass", [56], 55, 82, "sustained", "a trumpet", "trumpet",
          ["a trumpet playing", "a bright trumpet melody", "someone blowing a trumpet", "a brass fanfare on trumpet"]),
    _inst("trombone", "brass", [57], 40, 72, "sustained", "a trombone", "trombone",
          ["a trombone playing", "a slide trombone melody", "trombone notes sliding", "a mellow low brass line"]),
    _inst("tuba", "brass", [58], 28, 58, "sustained", "a tuba", "tuba",
          ["a tuba playing", "a deep tuba bass line", "oom-pah tuba notes", "the lowest brass instrument"]),
    _inst("flute", "woodwinds", [73], 60, 96, "sustained", "a flute", "flute",
          ["a flute playing", "an airy flute melody", "a flute trill and melody", "a breathy woodwind tune"]),
    _inst("clarinet", "woodwinds", [71], 50, 89, "sustained", "a clarinet", "clarinet",
          ["a clarinet playing", "a woody clarinet melody", "a clarinet tune", "a reed woodwind tune"]),
    _inst("saxophone", "woodwinds", [65, 66], 46, 80, "sustained", "a saxophone", "saxophone",
          ["a saxophone playing", "a jazzy sax melody", "a sax riff", "a reedy sax solo"]),
    _inst("acoustic_guitar", "plucked", [24, 25], 40, 81, "plucked", "an acoustic guitar", "acoustic guitar",
          ["an acoustic guitar playing", "someone strumming a guitar", "plucked guitar strings", "a fingerpicked guitar tune"]),
    _inst("banjo", "plucked", [105], 48, 81, "plucked", "a banjo", "banjo",
          ["a banjo playing", "a twangy banjo tune", "someone picking a banjo", "bluegrass banjo"]),
    _inst("harp", "plucked", [46], 36, 96, "plucked", "a harp", "harp",
          ["a harp playing", "harp arpeggios", "someone plucking a harp", "a gentle harp melody"]),
    _inst("xylophone", "percussion", [13], 65, 96, "mallet", "a xylophone", "xylophone",
          ["a xylophone playing", "mallets on a xylophone", "a bright xylophone tune", "wooden bars struck with mallets"]),
    _inst("drums", "percussion", [0, 8, 16, 32], 35, 59, "drums", "drums", "drums",
          ["a drum beat", "a drummer playing a beat", "a drum kit groove", "kick, snare and cymbals"], bank=128),
    _inst("accordion", "free_reed", [21, 23], 53, 89, "sustained", "an accordion", "accordion",
          ["an accordion playing", "a squeezebox tune", "accordion folk music", "a wheezy accordion melody"]),
    _every("dog", "animals", [], 0, 0, "recording", "a dog", "dog",
           ["a dog barking", "barking dogs", "a dog woofing", "a dog growling and barking"]),
    _every("cat", "animals", [], 0, 0, "recording", "a cat", "cat",
           ["a cat meowing", "a meowing cat", "a kitten mewing", "a cat crying miaow"]),
    _every("bird", "animals", [123], 50, 78, "effect_chirp", "a bird", "bird",
           ["a bird singing", "birds chirping", "birdsong", "a bird tweeting and calling"]),
    _every("helicopter", "machines", [125], 48, 72, "effect_long", "a helicopter", "helicopter",
           ["a helicopter flying", "helicopter rotor blades", "a chopper overhead", "the whirr of a helicopter"]),
    _every("telephone", "machines", [124], 55, 84, "effect_chirp", "a telephone", "telephone",
           ["a telephone ringing", "a ringing phone", "the phone is ringing", "an old telephone bell"]),
    _every("applause", "noise_textures", [126], 48, 72, "effect_long", "applause", "applause",
           ["people clapping", "an audience applauding", "a crowd clapping hands", "a round of applause"]),
    _every("seashore", "noise_textures", [122], 48, 72, "effect_long", "the seashore", "seashore",
           ["waves on a beach", "ocean waves crashing", "the sea washing on the shore", "surf at the seashore"]),
    _every("speech", "speech", [], 0, 0, "recording", "speech", "speech",
           ["a person speaking", "someone talking", "a voice reading aloud", "a spoken sentence"], kind="speech"),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
_BY_NAME = {c.name: c for c in CLASSES}

GENERIC_TEMPLATES: tuple[str, ...] = (
    "the sound of {a}",
    "{a}",
    "a recording of {a}",
    "audio of {a}",
    "what {a} sounds like",
    "isolate the {n}",
    "extract the {n} from the mix",
    "a clip with {a} in it",
)
"""Templates for every class (ids ``g00``..): ``{a}`` = noun with article, ``{n}`` = bare noun."""

KIND_TEMPLATES: dict[str, tuple[str, ...]] = {
    "instrument": ("the {n} part", "someone playing the {n}", "solo {n}", "the {n} in a recording"),
    "everyday": ("the noise of {a}", "{a} nearby", "a field recording of {a}", "background sound of {a}"),
    "speech": ("a human voice", "spoken words", "someone saying something", "a reading voice"),
}
"""Templates by kind (ids ``k00``..)."""


def get_class(name: str) -> ClassSpec:
    """The :class:`ClassSpec` of a class name.

    Raises:
        KeyError: unknown class, listing the known ones.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown class {name!r}; known classes: {', '.join(CLASS_NAMES)}") from None


def class_index(name: str) -> int:
    """Stable index of a class in the full catalog (used to seed its clips)."""
    get_class(name)
    return CLASS_NAMES.index(name)


def class_templates(spec: ClassSpec) -> list[tuple[str, str]]:
    """``(template_id, text)`` for every prompt of a class, in id order."""
    out = [(f"g{i:02d}", t.format(a=spec.a_noun, n=spec.noun)) for i, t in enumerate(GENERIC_TEMPLATES)]
    out += [(f"k{i:02d}", t.format(a=spec.a_noun, n=spec.noun)) for i, t in enumerate(KIND_TEMPLATES[spec.kind])]
    out += [(f"c{i:02d}", t) for i, t in enumerate(spec.phrasings)]
    return out


def prompt_rows(class_names: Iterable[str], test_template_ids: Iterable[str]) -> list[dict[str, str]]:
    """Rows of ``prompts.csv``: every template of every class, split group ``train`` or ``test``.

    Args:
        class_names: classes to include, in label order.
        test_template_ids: template ids held out for testing (split group ``test``).

    Raises:
        ValueError: a held-out id matches no template, or a class would be left
            without prompts in one of the two groups.
    """
    held_out = set(test_template_ids)
    rows: list[dict[str, str]] = []
    for name in class_names:
        templates = class_templates(get_class(name))
        ids = {tid for tid, _ in templates}
        unknown = held_out - ids
        if unknown:
            raise ValueError(f"held-out template ids {sorted(unknown)} do not exist for class {name!r}")
        groups = {tid: ("test" if tid in held_out else "train") for tid, _ in templates}
        if set(groups.values()) != {"train", "test"}:
            raise ValueError(f"class {name!r} needs prompts in both split groups, got {sorted(set(groups.values()))}")
        rows += [{"class_name": name, "template_id": tid, "split_group": groups[tid], "text": text} for tid, text in templates]
    return rows


def class_rows(class_names: Iterable[str]) -> list[dict[str, object]]:
    """Rows of ``classes.csv``: ``class_name, family, kind, label`` (label = position in ``class_names``)."""
    return [
        {"class_name": n, "family": get_class(n).family, "kind": get_class(n).kind, "label": i}
        for i, n in enumerate(class_names)
    ]
