"""The documentation's house rules: a short front page, a short model card,
user pages that do not date (no "today", issue numbers, unnumbered section
references or commit hashes) and relative links that lead somewhere."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CARD = ROOT / "checkpoints" / "README.md"
USER_PAGES = sorted((ROOT / "docs").glob("*.md"))  # docs/dev and docs/experiments are not user pages
ALL_DOCS = [README, CARD, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]

FORBIDDEN = {
    "an issue number": re.compile(r"\bissues? #?\d+", re.I),
    "a DESIGN § reference": re.compile(r"DESIGN\s*§"),
    "a commit hash": re.compile(r"(?<![0-9a-f])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,12}(?![0-9a-f])"),
    'the word "today"': re.compile(r"\btoday\b", re.I),
}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text without fenced code blocks, where a hash-like token can be data."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def status_section(text: str) -> list[str]:
    return text.split("\n## Status\n", 1)[1].split("\n## ", 1)[0].strip("\n").splitlines()


def test_readme_is_a_front_page_of_8_kb_or_less():
    assert len(README.read_bytes()) <= 8192


def test_readme_status_section_is_25_lines_or_fewer():
    lines = status_section(README.read_text(encoding="utf-8"))
    assert 0 < len(lines) <= 25, len(lines)
    assert sum(1 for ln in lines if re.match(r"\|[-| ]+\|$", ln)) == 1, "the Status section holds one table"


def test_model_card_is_150_lines_or_fewer():
    assert len(CARD.read_text(encoding="utf-8").splitlines()) <= 150


@pytest.mark.parametrize("page", [README, CARD, *USER_PAGES], ids=_rel)
def test_user_pages_do_not_date(page):
    text = _prose(page.read_text(encoding="utf-8"))
    text = re.sub(r"`[0-9a-f]{64}`", "", text)  # a sha256 is a checksum, not a commit
    found = {what: m.group(0) for what, rx in FORBIDDEN.items() if (m := rx.search(text))}
    assert not found, f"{_rel(page)} has {found}"


def test_the_rules_catch_what_they_are_for():
    """Guards the regular expressions: each must match its example and pass the plain line."""
    bad = {"an issue number": "see issue 7", "a DESIGN § reference": "DESIGN §3",
           "a commit hash": "commit 2f7f2e2", 'the word "today"': "on today's build"}
    for what, example in bad.items():
        assert FORBIDDEN[what].search(example), what
        assert not FORBIDDEN[what].search("1,132 steps at batch 1024 on 2026-11-27, fp16, 3072-d")


def relative_links(text: str) -> list[str]:
    """Targets of markdown links and images that are paths in this repository."""
    targets = re.findall(r"\]\(([^)\s]+)\)", _prose(text))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", ALL_DOCS, ids=_rel)
def test_relative_links_resolve(page):
    broken = [t for t in relative_links(page.read_text(encoding="utf-8"))
              if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{_rel(page)} links to missing files {broken}"
