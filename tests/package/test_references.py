"""Documentation that is true: every project file named in the README, docs/ and the package's docstrings
exists, and every relative Markdown link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Paths inside the repository start with one of its top-level folders; anything else (OUT/mark.json,
# runs/demo/...) is a placeholder or an output of a command.
TOP = ("src", "tests", "benchmarks", "docs", "scripts", "configs", "results", ".ci", "research", "markers", "heldout")
PATH = re.compile(r"(?<![\w./~-])((?:" + "|".join(re.escape(t) for t in TOP)
                  + r")/(?:[\w.-]+/)*[\w.-]+\.(?:py|md|json|toml|sh|png|safetensors|yaml|yml|jsonl))")
OUTPUTS = {"results.md"}  # written by `radioactive experiment` into its output folder
BARE_MD = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "src" / "radioactive").rglob("*.py"))]


def _named(text: str) -> set[str]:
    return set(PATH.findall(text))


def test_the_pattern_finds_paths_and_skips_placeholders():
    text = "see `docs/method.md`, benchmarks/results/demo.json and OUT/mark.json or runs/demo/key.safetensors"
    assert _named(text) == {"docs/method.md", "benchmarks/results/demo.json"}
    assert BARE_MD.findall("the optimisation of METHOD.md, see docs/method.md") == ["METHOD.md"]


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_named_files_exist(document: Path):
    text = document.read_text()
    missing = sorted(name for name in _named(text) if not (ROOT / name).exists())
    assert missing == []
    places = (ROOT, ROOT / "docs", document.parent)
    unknown = sorted(name for name in set(BARE_MD.findall(text)) - OUTPUTS if not any((p / name).exists() for p in places))
    assert unknown == []
    if document.suffix == ".md":
        links = [link for link in LINK.findall(text) if "://" not in link and not link.startswith("mailto:")]
        broken = sorted(link for link in links if not (document.parent / link).exists())
        assert broken == []
