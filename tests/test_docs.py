"""Citations of the documentation stay honest: every "docs/X.md section N" in the code, tests, scripts and
notebooks names a file in ``docs/`` and a section that file has (its ``## N.`` headings are the oracle),
and no citation names a document outside the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("mars_core", "tests", "scripts", "notebooks", "benchmarks", "datasets")
SCANNED_FILES = ("README.md", "Makefile", "conftest.py")
SUFFIXES = {".py", ".sh", ".md", ".ipynb", ".txt", ".json", ".cfg", ".toml", ""}

CITATION = re.compile(
    r"docs/(?P<doc>[\w-]+)\.md\s+(?P<word>sections?)\s+"
    r"(?P<nums>\d+(?:\s*(?:-|–|,|and|to)\s*\d+)*)"
)
"""``docs/method.md section 3``, ``docs/method.md sections 4-6``, ``docs/method.md sections 5, 7 and 8``."""
BARE = re.compile(r"(?<![\w/.-])(?:docs/)?(?:method|environment|offline-data|conventions)\.md")
"""A mention of one of the method documents, with or without the ``docs/`` prefix."""
HEADING = re.compile(r"^## (\d+)\.", re.M)


def cited_sections(text: str) -> list[tuple[str, list[int]]]:
    """``[(doc, [section, ...]), ...]`` of every citation in ``text``; ``a-b`` / ``a to b`` expand to the range."""
    out = []
    for m in CITATION.finditer(text):
        nums = m["nums"]
        sections: list[int] = []
        for part in re.split(r"\s*(?:,|and)\s*", nums):
            ends = [int(x) for x in re.split(r"\s*(?:-|–|to)\s*", part) if x]
            sections.extend(range(ends[0], ends[-1] + 1))
        out.append((m["doc"], sections))
    return out


def _text(path: Path) -> str:
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":  # join each cell's lines, so a citation broken over two lines still matches
        return "\n".join("".join(c.get("source", [])) for c in json.loads(raw)["cells"])
    return raw


def _scanned_files() -> list[Path]:
    files = [ROOT / f for f in SCANNED_FILES if (ROOT / f).is_file()]
    for d in SCANNED:
        files += [p for p in sorted((ROOT / d).rglob("*")) if p.is_file() and p.suffix in SUFFIXES
                  and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def _doc_sections(doc: str) -> set[int] | None:
    path = ROOT / "docs" / f"{doc}.md"
    return set(int(n) for n in HEADING.findall(path.read_text(encoding="utf-8"))) if path.is_file() else None


def test_the_citation_parser_on_crafted_text():
    text = ("see docs/method.md section 3; docs/method.md sections 4-6, docs/method.md sections 5, 7 and 8\n"
            "and docs/environment.md\nsection 6 (line break inside)")
    assert cited_sections(text) == [("method", [3]), ("method", [4, 5, 6]), ("method", [5, 7, 8]),
                                     ("environment", [6])]
    assert BARE.findall("method.md section 2, docs/method.md, see environment.md") == [
        "method.md", "docs/method.md", "environment.md"]


def test_method_document_has_the_nine_numbered_sections():
    assert _doc_sections("method") == set(range(1, 10))


def test_every_docs_citation_names_an_existing_file_and_section():
    bad, n = [], 0
    for path in _scanned_files():
        for doc, sections in cited_sections(_text(path)):
            n += 1
            have = _doc_sections(doc)
            if have is None:
                bad.append(f"{path.relative_to(ROOT)}: docs/{doc}.md does not exist")
            else:
                bad += [f"{path.relative_to(ROOT)}: docs/{doc}.md has no section {s} (has {sorted(have)})"
                        for s in sections if s not in have]
    assert n >= 20, f"only {n} citations found: the scan or the pattern is broken"
    assert not bad, "\n".join(bad)


def test_method_documents_are_cited_inside_the_repository():
    """Every mention of method/environment/offline-data/conventions .md is a ``docs/`` file that exists."""
    bad = []
    for path in _scanned_files():
        for mention in BARE.findall(_text(path)):
            if not mention.startswith("docs/"):
                bad.append(f"{path.relative_to(ROOT)} cites {mention!r}: cite docs/{mention} section N "
                           "(or datasets/README.md for the benchmark's sources)")
            elif not (ROOT / mention).is_file():
                bad.append(f"{path.relative_to(ROOT)} cites {mention}, which does not exist")
    assert not bad, "\n".join(bad)
