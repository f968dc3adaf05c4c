"""README's two commands are what a new user runs and what CI runs: `.ci/run`
must contain exactly them, in order, inside a fresh virtual environment."""
from __future__ import annotations

import re
from pathlib import Path

from helpers import fenced_blocks

ROOT = Path(__file__).resolve().parent.parent


def commands(block: str) -> list[str]:
    """The non-blank, non-comment lines of a shell block, stripped."""
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def readme_two_commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text(encoding="utf-8").split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = [commands(b) for b in fenced_blocks(section)]
    (two,) = [c for c in blocks if any("install.sh" in line for line in c)]
    return two


def test_readme_has_two_commands_install_then_tests():
    two = readme_two_commands()
    assert len(two) == 2, two
    assert two[0].startswith("bash install.sh && hear-abt embed ") and two[1] == "python3 -m pytest -q"


def test_ci_runs_readme_commands_verbatim_in_a_fresh_venv():
    ci = commands(ROOT.joinpath(".ci/run").read_text(encoding="utf-8"))
    two = readme_two_commands()
    missing = [c for c in two if c not in ci]
    assert not missing, f".ci/run does not run README's command(s) {missing}: keep them in step"
    first, second = (ci.index(c) for c in two)
    venv = [i for i, c in enumerate(ci) if re.search(r"python3 -m venv ", c)]
    activate = [i for i, c in enumerate(ci) if re.match(r'(\.|source) "?\$\w+/[^ ]*/bin/activate"?$', c)]
    assert len(venv) == 1 and "--system-site-packages" not in ci[venv[0]] and "mktemp -d" in " ".join(ci[: venv[0]])
    assert activate and venv[0] < activate[0] < first < second
    assert ci.index("ruff check .") < second  # the linter runs in CI too
