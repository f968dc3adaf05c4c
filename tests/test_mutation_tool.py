"""tools/mutation.py's work folder and the conftest it installs there, which
corrects what mutmut 3.3.1 gets wrong: test durations taken from teardown
(so slow surviving mutants scored as timeouts, i.e. detected) and one
temporary folder left behind per mutant."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tools import mutation

REPO = Path(__file__).resolve().parents[1]

# A stand-in for mutmut's stats hook: it keeps, per test, the duration of the
# last report phase it sees, exactly as mutmut 3.3.1's StatsCollector does.
RECORDER = '''
import json, os
durations = {}
def pytest_runtest_makereport(item, call):
    durations[item.nodeid] = call.duration
def pytest_unconfigure(config):
    json.dump(durations, open(os.environ["RECORD_TO"], "w"))
'''

SLOW_TEST = '''
import time, pytest
@pytest.fixture
def slow_setup():
    time.sleep(0.4)
def test_slow(slow_setup, tmp_path):
    (tmp_path / "state.bin").write_bytes(b"x" * 1000)
    open(__import__("os").environ["TMP_SEEN"], "w").write(str(tmp_path))
    time.sleep(0.3)
'''


def test_conftest_reports_whole_test_time_and_removes_its_temp_folder(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(REPO / "tools" / "mutation_conftest.py", proj / "conftest.py")
    (proj / "recorder.py").write_text(RECORDER)
    (proj / "test_slow.py").write_text(SLOW_TEST)
    env = dict(os.environ, PYTHONPATH=str(proj), RECORD_TO=str(tmp_path / "d.json"),
               TMP_SEEN=str(tmp_path / "seen.txt"), HEAR_ABT_MUTATION_TMP=str(tmp_path / "base"))
    env.pop("PYTEST_ADDOPTS", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "recorder", "-p", "no:cacheprovider", "test_slow.py"],
                       cwd=proj, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    recorded = json.loads((tmp_path / "d.json").read_text())["test_slow.py::test_slow"]
    assert 0.65 * 3 / 15 <= recorded < 0.5, recorded  # (setup 0.4 s + call 0.3 s) x 3 / 15, not teardown's ~0 s
    seen = Path((tmp_path / "seen.txt").read_text())
    assert seen.is_relative_to(tmp_path / "base")  # the session's own base folder ...
    assert not seen.exists() and not any((tmp_path / "base" / "hear-abt-mutation-tmp").iterdir())  # ... removed at its end


def test_prepare_installs_the_conftest_and_mutates_only_the_module(tmp_path):
    d = mutation.prepare("train/optim", tmp_path)
    assert (d / "conftest.py").read_text() == (REPO / "tools" / "mutation_conftest.py").read_text()
    cfg = (d / "setup.cfg").read_text()
    also_copy = cfg.split("also_copy=")[1].split("tests_dir=")[0].split()
    assert "conftest.py" in also_copy
    dont = cfg.split("do_not_mutate=")[1].split("also_copy=")[0].split()
    assert "hear_abt/train/optim.py" not in dont and "hear_abt/train/loop.py" in dont and "hear_abt/embed.py" in dont
    assert cfg.split("tests_dir=")[1].split() == mutation.MODULES["train/optim"]


def test_results_survive_mutmuts_reset_and_samples_are_seeded(tmp_path):
    """mutmut 3.3.1 resets the .meta's results at every start; the ledger
    keeps earlier ones, a new result overrides an old one, and --sample
    draws reproducibly from the untested only."""
    d = mutation._work_dir(tmp_path, "train/optim")
    meta = d / "mutants" / "hear_abt" / "train" / "optim.py.meta"
    meta.parent.mkdir(parents=True)
    names = [f"hear_abt.train.optim.x_f__mutmut_{i}" for i in range(10)]

    def write_meta(codes):
        meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": {}}))

    write_meta({n: (1 if i < 4 else None) for i, n in enumerate(names)})  # first run: 4 killed
    mutation._save_ledger("train/optim", tmp_path)
    write_meta({n: (0 if i in (3, 5) else None) for i, n in enumerate(names)})  # second run, after mutmut's reset
    codes = mutation._results("train/optim", tmp_path)  # mutmut's exit codes: 1 killed, 0 survived, None untested
    assert [codes[n] for n in names[:6]] == [1, 1, 1, 0, None, 0]
    untested = sorted(n for n in names if codes[n] is None)
    assert len(untested) == 5
    a = mutation.untested_sample("train/optim", tmp_path, 3, seed=1)
    assert a == mutation.untested_sample("train/optim", tmp_path, 3, seed=1) and len(set(a)) == 3 and set(a) <= set(untested)
    assert mutation.untested_sample("train/optim", tmp_path, 99, seed=2) == untested


def test_resume_of_a_copy_without_results_runs_every_mutant(tmp_path, monkeypatch):
    """A copy stopped before mutmut listed its mutants has nothing to resume
    from: --resume then runs the whole module, not nothing."""
    d = mutation._work_dir(tmp_path, "train/optim")
    d.mkdir(parents=True)
    (d / "setup.cfg").write_text("[mutmut]\n")
    calls = []
    monkeypatch.setattr(mutation.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    mutation.run("train/optim", tmp_path, 1, resume=True)
    assert len(calls) == 1 and calls[0][-3:] == ["run", "--max-children", "1"]
