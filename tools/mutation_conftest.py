"""Copied by tools/mutation.py to the root of a mutation run's work folder as
conftest.py; it corrects two things mutmut 3.3.1 gets wrong for this suite.

- Test durations: mutmut records each test's duration from the last report
  phase it sees (teardown, ~0 s), so its timeout, (estimate + 1) x 15 s,
  stops any mutant whose tests run past ~15 s and counts it as detected. Here
  the teardown's duration is replaced by the test's total (setup + call +
  teardown) times TIMEOUT_FACTOR / 15 before mutmut's hook reads it: the
  timeout becomes TIMEOUT_FACTOR x the true time + 15 s (with the true time,
  a hanging train/loop mutant would hold a core for ~7 minutes). The order
  of the tests, fastest first, is unchanged.
- Temporary folders: each mutant's pytest session runs in a forked child
  that never runs pytest's clean-up, so /tmp/pytest-of-<user> grows by one
  folder per mutant (train/loop: ~2 GB each). Here every session gets its
  own base folder, removed when the session ends.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

TIMEOUT_FACTOR = float(os.environ.get("HEAR_ABT_MUTATION_TIMEOUT_FACTOR", "3"))
_BASE = Path(os.environ.get("HEAR_ABT_MUTATION_TMP", tempfile.gettempdir())) / "hear-abt-mutation-tmp"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None:
        _BASE.mkdir(parents=True, exist_ok=True)
        config.option.basetemp = str(_BASE / str(os.getpid()))
        config._hear_abt_own_basetemp = True


def pytest_unconfigure(config: pytest.Config) -> None:
    if getattr(config, "_hear_abt_own_basetemp", False):
        shutil.rmtree(config.option.basetemp, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    total = getattr(item, "_hear_abt_duration", 0.0) + call.duration
    item._hear_abt_duration = total
    if call.when == "teardown":
        call.duration = total * TIMEOUT_FACTOR / 15
