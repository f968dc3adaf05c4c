"""Fault injection: kill it anywhere, lose nothing.

SIGKILL the trainer at seeded-random events (inside steps, inside the atomic
state write, inside the export, during start-up), then --resume: the final weights must be
bitwise those of an uninterrupted run. State files that lie (cut short,
flipped bytes, another run's) must be named in a clear error and never lead
to a silent restart. A full disk must leave the previous state intact. The
log-mel cache and the heareval driver get the same treatment.

Run `python -m pytest -q -s tests/test_faults.py` to see where each kill landed.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import helpers
import pytest
import torch
from helpers import fake_state

from hear_abt.checkpoint import content_digest
from hear_abt.errors import TrainError
from hear_abt.train import loop

REPO = Path(__file__).resolve().parent.parent
SEED = 17


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
               OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


def _train_cmd(corpus: Path, cache_root: Path, run_dir: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "hear_abt.train", "--data", str(corpus), "--cache-dir", str(cache_root),
            "--run-dir", str(run_dir), "--steps", str(steps), "--batch-size", "4", "--device", "cpu", "--resume",
            "--set", "crop_frames=16", "--set", "projector=[32,16]", "--set", "mixup_bank=8", "--set", "workers=0",
            "--set", "ckpt_every=2", "--set", "log_every=1", "--set", "plot_every=0"]


def _log_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "log.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("wall_s")]


def _computed_columns(run_dir: Path) -> list[tuple]:
    """What a step computed (not its timing): must match between runs."""
    return [(r["step"], r["loss"], r["invariance"], r["redundancy"], r["lr_factor"], r["bad_steps"]) for r in _log_rows(run_dir)]


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for part in ("model", "optimizer", "mixup"):
        assert content_digest(a[part]) == content_digest(b[part]), part
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 180.0) -> bool:
    """Poll cond() every 10 ms; False when the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out waiting for the trainer")


# ---------------------------------------------------------------- 1. SIGKILL anywhere

# Run by the kill test in place of `python -m hear_abt.train`: the trainer,
# with one pause point patched in. When the launch reaches the event named by
# FAULT_AT (the FAULT_N-th of its kind), it writes FAULT_MARK, saying where
# it is, and waits there until the test kills it; so every kill lands at its
# event whatever the machine's speed.
PAUSING_TRAINER = """
import io, os, signal, sys
from pathlib import Path

import torch

from hear_abt.train import __main__ as entry, loop

AT, N, MARK = os.environ["FAULT_AT"], int(os.environ["FAULT_N"]), Path(os.environ["FAULT_MARK"])
seen = {}


def reached(kind, where):
    seen[kind] = seen.get(kind, 0) + 1
    if kind != AT or seen[kind] != N:
        return
    MARK.write_text(where)
    while True:
        signal.pause()  # until the test's SIGKILL


real_save = torch.save


def save(obj, f, *args, **kwargs):
    path = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else ""
    kind = "state write" if ".state.pt.new" in path else "export" if "encoder.pt" in path else None
    if kind is None:
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getbuffer()
    f.write(data[: len(data) // 2])
    f.flush()
    what = "a state" if kind == "state write" else "encoder.pt"
    reached(kind, f"inside the write of {what} ({len(data) // 2} of {len(data)} bytes written)")
    f.write(data[len(data) // 2:])


torch.save = save

real_set_lr = loop.set_lr


def set_lr(opt, *args):
    real_set_lr(opt, *args)
    reached("step", f"in the {seen.get('step', 0) + 1}. step of the launch (views made, before the forward pass)")


loop.set_lr = set_lr

real_resume_point, real_open_cache = loop.resume_point, loop.open_cache


def resume_point(*args):
    out = real_resume_point(*args)
    reached("startup", "during start-up (state loaded, cache not yet opened)")
    return out


def open_cache(*args):
    cache = real_open_cache(*args)
    reached("startup", "during start-up (cache opened, model not yet built)")
    return cache


loop.resume_point, loop.open_cache = resume_point, open_cache
entry.main(sys.argv[1:])
"""


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_is_bitwise_exact(audio_corpus, mel_cache_root, tmp_path):
    """>= 10 SIGKILLs in one run (seeded), each followed by --resume; the final
    state, the exported encoder and every logged loss equal an uninterrupted run's.
    Each kill is placed by an event (a pause point the launch reaches), not by time."""
    steps = 12
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    cmd = _train_cmd(audio_corpus, mel_cache_root, run_dir, steps)
    ref = subprocess.run(_train_cmd(audio_corpus, mel_cache_root, ref_dir, steps), env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    rng = random.Random(SEED)
    # Where to aim each kill; the last three aim at the export, which only the
    # launches that reach the final step can hit.
    plan = ["step"] * 4 + ["state write"] * 4 + ["startup"] * 2
    rng.shuffle(plan)
    plan += ["export"] * 3
    script, mark = tmp_path / "pausing_trainer.py", tmp_path / "paused"
    script.write_text(PAUSING_TRAINER)
    landed: list[str] = []
    for aim in plan:
        mark.unlink(missing_ok=True)
        n = {"step": rng.randint(1, 3), "state write": rng.randint(1, 2), "startup": rng.randint(1, 2), "export": 1}[aim]
        env = _env(FAULT_AT=aim, FAULT_N=str(n), FAULT_MARK=str(mark))
        proc = subprocess.Popen([sys.executable, str(script), *cmd[3:]], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            if not _wait_for(mark.exists, proc):
                continue  # it finished (or failed) before the event came: checked below
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
            landed.append(f"{aim:>11} -> {mark.read_text()}, {len(_log_rows(run_dir))} steps logged")
        finally:
            if proc.poll() is None:
                proc.kill()
            err = proc.communicate()[1]
        assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
        if proc.returncode == 0:
            break
    final = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]

    print(f"\n{len(landed)} SIGKILLs survived (seed {SEED}):\n  " + "\n  ".join(landed))
    assert len(landed) >= 10
    assert any("write of a state" in w for w in landed) and any("write of encoder.pt" in w for w in landed)
    assert any("step of the launch" in w for w in landed) and any("start-up" in w for w in landed)
    _assert_states_equal(loop.load_state(loop.state_path(run_dir)), loop.load_state(loop.state_path(ref_dir)))
    a, b = (torch.load(d / "encoder.pt", weights_only=True)["state_dict"] for d in (run_dir, ref_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _computed_columns(run_dir) == _computed_columns(ref_dir)  # no log row lost or repeated
    assert [r[0] for r in _computed_columns(run_dir)] == [str(s) for s in range(1, steps + 1)]
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".state")]


# ---------------------------------------------------------------- 2. state files that lie

@pytest.fixture
def two_states(tiny_config, tmp_path):
    """A 6-step run stopped after step 4: state.pt (step 4) and state.prev.pt (step 2)."""
    cfg = tiny_config(steps=6, run_dir=str(tmp_path / "run"))
    loop.train(cfg, stop_at=4)
    return cfg


def test_keeps_the_last_two_states(two_states):
    cur, prev = loop.state_paths(two_states.run_dir)
    a, b = loop.load_state(cur), loop.load_state(prev)
    assert (a["step"], b["step"]) == (4, 2)
    assert a["run_id"] == b["run_id"] == loop.read_run_id(two_states.run_dir)


def _corruptions(good: bytes, rng: random.Random):
    """(label, bytes): truncations at 12 lengths and 24 single or multi-byte flips."""
    for frac in (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999):
        yield f"cut to {frac:.2%}", good[: int(len(good) * frac)]
    yield "last byte cut", good[:-1]
    for k in range(24):
        data = bytearray(good)
        n = 1 if k < 16 else 8
        for _ in range(n):
            i = rng.randrange(len(data)) if k % 4 else rng.randrange(min(len(data), 4096))  # some in the headers
            data[i] ^= 1 << rng.randrange(8)
        yield f"{n} flipped bit(s)", bytes(data)


def test_corrupt_states_are_named_and_never_silently_used(two_states):
    """Every corruption of state.pt is either refused with an error naming the
    file, or (a flip in zip padding) reads back content identical to the good
    file; the newest good state is then used, saying so. No warning from torch
    comes with the error (one used to: TypedStorage's deprecation)."""
    cur, prev = loop.state_paths(two_states.run_dir)
    good_bytes = cur.read_bytes()
    good = loop.load_state(cur)
    rng = random.Random(SEED)
    refused, harmless = 0, 0
    for label, data in _corruptions(good_bytes, rng):
        cur.write_bytes(data)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                st = loop.load_state(cur, loop.read_run_id(two_states.run_dir))
        except loop.StateError as e:
            assert not caught, (label, [str(w.message) for w in caught])  # the error alone says what is wrong
            assert str(cur) in str(e), (label, e)
            refused += 1
            state, path = loop.load_newest_state(two_states.run_dir)
            assert path == prev and state["step"] == 2, label
        else:
            assert not caught, (label, [str(w.message) for w in caught])
            assert content_digest({k: v for k, v in st.items()}) == content_digest(good), label
            harmless += 1
    print(f"\n{refused + harmless} corruptions of state.pt: {refused} refused naming the file, "
          f"{harmless} left the content intact (flips in zip padding)")
    assert refused >= 30
    cur.write_bytes(good_bytes)


def test_resume_after_corruption_uses_the_previous_state_exactly(two_states, tiny_config, tmp_path, capfd):
    ref = loop.train(tiny_config(steps=6, run_dir=str(tmp_path / "ref")))
    cur, prev = loop.state_paths(two_states.run_dir)
    data = bytearray(cur.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cur.write_bytes(bytes(data))
    out = loop.train(two_states, resume=True)
    err = capfd.readouterr().err
    assert f"{cur} is corrupt" in err and f"resuming from {prev} (step 2)" in err
    assert len(list(Path(two_states.run_dir).glob("state.pt.bad-*"))) == 1  # set aside, not rotated into prev
    assert out["step"] == 6 and out["losses"] == ref["losses"][2:]
    _assert_states_equal(loop.load_state(cur), loop.load_state(loop.state_path(tmp_path / "ref")))
    assert loop.load_state(prev)["step"] == 4


def test_another_runs_state_is_refused(two_states, tiny_config, tmp_path):
    other = tiny_config(steps=6, run_dir=str(tmp_path / "other"))
    loop.train(other, stop_at=2)
    cur, prev = loop.state_paths(two_states.run_dir)
    shutil.copy(loop.state_path(other.run_dir), cur)
    with pytest.raises(loop.StateError, match=f"{cur} belongs to another run"):
        loop.load_state(cur, loop.read_run_id(two_states.run_dir))
    state, path = loop.load_newest_state(two_states.run_dir)
    assert path == prev and state["step"] == 2


def test_no_valid_state_stops_instead_of_restarting(two_states):
    for p in loop.state_paths(two_states.run_dir):
        p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(TrainError) as e:
        loop.train(two_states, resume=True)
    msg = str(e.value)
    assert "no usable training state" in msg and all(str(p) in msg for p in loop.state_paths(two_states.run_dir))
    from hear_abt.train.__main__ import main

    with pytest.raises(SystemExit, match="no usable training state"):
        main(["--run-dir", two_states.run_dir, "--export", str(Path(two_states.run_dir) / "x.pt")])


# ---------------------------------------------------------------- 5. disk full

def _small_filesystem(path: Path, size: str) -> bool:
    """Mount a tmpfs of `size` at path (needs root / CAP_SYS_ADMIN)."""
    path.mkdir()
    if shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_disk_full_during_a_state_write_keeps_the_previous_states(tmp_path, monkeypatch):
    """On a 4 MiB tmpfs (or, where mounting is refused, with ENOSPC raised at the
    write call) the third state does not fit: the write fails with ENOSPC and
    both earlier states are still there, readable and unchanged."""
    mnt = tmp_path / "small"
    real = _small_filesystem(mnt, "4m")
    try:
        run = mnt / "run"
        run.mkdir()
        loop.write_state(fake_state(250_000, 1), run)  # ~1 MB each
        loop.write_state(fake_state(250_000, 2), run)
        before = [p.read_bytes() for p in loop.state_paths(run)]
        if not real:
            def no_space(*a, **k):
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")

            monkeypatch.setattr(torch, "save", no_space)
        with pytest.raises(OSError) as e:
            loop.write_state(fake_state(1_000_000, 3), run)  # ~4 MB: more than is left
        assert e.value.errno == errno.ENOSPC
        print(f"\ndisk full: {'a real 4 MiB tmpfs' if real else 'simulated ENOSPC (mount refused)'}: {e.value}")
        assert [p.read_bytes() for p in loop.state_paths(run)] == before
        assert [loop.load_state(p)["step"] for p in loop.state_paths(run)] == [2, 1]
        assert sorted(p.name for p in run.iterdir()) == ["state.prev.pt", "state.pt"]  # no half-written file left
    finally:
        if real:
            subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_in_training_says_what_survived(tiny_config, tmp_path, monkeypatch):
    """The trainer turns ENOSPC at a save into a clear stop, and --resume later
    continues from the state that was intact."""
    cfg = tiny_config(steps=4, ckpt_every=2)
    real_save = loop.write_state
    calls = []

    def full_on_second(state, run_dir):
        calls.append(state["step"])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real_save(state, run_dir)

    monkeypatch.setattr(loop, "write_state", full_on_second)
    with pytest.raises(TrainError, match=r"could not write the training state of step 4 .*No space left.* earlier states are intact"):
        loop.train(cfg)
    monkeypatch.setattr(loop, "write_state", real_save)
    assert loop.load_state(loop.state_path(cfg.run_dir))["step"] == 2
    assert loop.train(cfg, resume=True)["step"] == 4


# ---------------------------------------------------------------- 4. evaluation

SCENE = "tiny_scene-v1.0-full"


def _break_task(src: Path, tasks: Path, name: str, how: str) -> Path:
    import soundfile as sf

    dst = tasks / name
    shutil.copytree(src, dst)
    if how == "missing split":
        (dst / "fold01.json").unlink()
        return dst / "fold01.json"
    if how == "corrupt split":
        (dst / "fold02.json").write_text('{"fold02_low_0.wav": ["lo')
        return dst / "fold02.json"
    if how == "wrong sample rate":
        bad = sorted((dst / "44100" / "fold00").glob("*.wav"))[1]
        x, _ = sf.read(bad)
        sf.write(bad, x[::2], 22050)
        return bad
    if how == "missing clip":
        bad = sorted((dst / "16000" / "fold01").glob("*.wav"))[0]
        bad.unlink()
        return bad
    raise ValueError(how)


@pytest.fixture(scope="module")
def eval_tasks(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The tiny k-fold scene task and four broken copies of it (file to be named)."""

    root = tmp_path_factory.mktemp("evaltasks")
    good = helpers.make_scene_task(root)
    broken = {how: _break_task(good, root, f"broken_{how.replace(' ', '_')}-v1.0-full", how)
              for how in ("missing split", "corrupt split", "wrong sample rate", "missing clip")}
    return root, broken


def test_task_check_names_the_file(eval_tasks):
    from eval.driver.task_check import check_task

    root, broken = eval_tasks
    assert check_task(root / SCENE) == []
    for how, bad_file in broken.items():
        problems = check_task(bad_file.parents[2] if bad_file.suffix == ".wav" else bad_file.parent)
        assert problems and any(str(bad_file) in p for p in problems), (how, problems)


@pytest.mark.parametrize("metadata", ['{"embedding_type": "sce', "[1, 2]", b"\xff\xfe{"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_eval_corrupt_task_metadata_is_named_and_the_driver_goes_on(tmp_path, metadata, jobs):
    """A task_metadata.json that is cut short, not an object or not UTF-8
    used to stop the driver with a JSONDecodeError while it sorted the tasks;
    now that task fails by name and the run ends with exit status 1."""
    bad = tmp_path / "tasks" / "bad-v1.0-full" / "task_metadata.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(metadata if isinstance(metadata, bytes) else metadata.encode())
    run = subprocess.run(_driver(tmp_path / "tasks", tmp_path / "out", "--jobs", jobs), capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stdout + run.stderr
    assert f"INVALID task folder, skipped: {bad}" in run.stdout and "FAILED: bad-v1.0-full" in run.stdout, run.stdout


def _driver(tasks: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "eval.driver.run", "--tasks-dir", str(tasks), "--module", "hearbaseline_naive",
            "--tag", "naive", "--grid", "faster", "--grid-points", "1", "--results-dir", str(results), *extra]


def _children(pid: int) -> list[int]:
    """Processes started by any of pid's threads (the driver's --jobs workers are threads)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _all_dead_within(pids: list[int], seconds: float) -> bool:
    """Whether every pid is dead within `seconds` (polled every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while not all(_dead(c) for c in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(_dead(c) for c in pids)


def _paused_driver(pause_dir: Path, stage: str, cmd: list[str]) -> list[str]:
    """The driver command `cmd` with its `stage` runners paused (tests/paused_eval_driver.py)."""
    assert cmd[1:3] == ["-m", "eval.driver.run"], cmd
    return [cmd[0], str(Path(__file__).resolve().parent / "paused_eval_driver.py"), str(pause_dir), stage, *cmd[3:]]


def _paused(pause_dir: Path, stage: str) -> list[Path]:
    return sorted(pause_dir.glob(f"{stage}-*.paused"))


@pytest.mark.slow
def test_eval_killed_mid_embeddings_and_mid_predictions_scores_as_uninterrupted(eval_tasks, tmp_path):
    """Uninterrupted: the four broken tasks fail by name, the good one scores.
    Then SIGKILL the driver (only its pid) while the good task's embeddings
    runner is paused after its first saved batch, rerun, SIGKILL it while the
    predictions runner is paused after training its first grid point, rerun:
    its runners die with it, and the final scores equal the uninterrupted ones."""
    root, broken = eval_tasks
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    ref = subprocess.run(_driver(root, tmp_path / "ref"), capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert ref.returncode == 1, ref.stdout + ref.stderr  # failed tasks -> exit status 1
    for how, bad_file in broken.items():
        line = next(l for l in ref.stdout.splitlines() if f"broken_{how.replace(' ', '_')}" in l)
        assert "INVALID" in line and str(bad_file) in line, (how, line)
    ref_scores = json.loads((tmp_path / "ref" / "naive" / "scores.json").read_text())
    assert list(ref_scores["tasks"]) == [SCENE]

    out = tmp_path / "killed"
    cmd = _driver(root, out, "--tasks", SCENE)
    work = out / "naive" / "work"
    landed = []
    for phase in ("embeddings", "predictions"):
        log, pause_dir = tmp_path / f"{phase}.out", tmp_path / f"pause-{phase}"
        with log.open("w") as fh:
            proc = subprocess.Popen(_paused_driver(pause_dir, phase, cmd), stdout=fh, stderr=subprocess.STDOUT,
                                    env=env, cwd=REPO)
        try:
            assert _wait_for(lambda: bool(_paused(pause_dir, phase)), proc, timeout=600), log.read_text()  # noqa: B023
            runners = _children(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        done = {m.name for m in work.glob(f"embeddings/*/{SCENE}/*done*")}
        saved = len(list(work.glob(f"embeddings/*/{SCENE}/*/*.npy")))
        landed.append(f"{phase}: runner {runners} paused at the kill, {saved} clip embeddings saved, "
                      f"markers then {sorted(done)}")
        # PR_SET_PDEATHSIG: at once (the paused runner would otherwise wait for ever)
        assert runners and _all_dead_within(runners, 3), f"heareval runner outlived the driver: {runners}"
        assert saved > 0 and "prediction-done.json" not in done, landed[-1]
        if phase == "embeddings":
            assert ".done.embeddings" not in done, landed[-1]
        else:
            assert ".done.embeddings" in done and any(p.suffix == ".ckpt" for p in work.rglob("*")), landed[-1]
    final = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert final.returncode == 0, final.stdout + final.stderr
    print("\neval driver killed twice:\n  " + "\n  ".join(landed))
    scores = json.loads((out / "naive" / "scores.json").read_text())
    assert scores["tasks"] == ref_scores["tasks"]
    assert scores["tasks"][SCENE]["mean"] is not None


@pytest.mark.slow
def test_eval_ctrl_c_with_parallel_jobs_stops_every_runner_and_resumes(tmp_path):
    """--jobs 2: Ctrl-C in a terminal (SIGINT to the driver's whole process
    group) while both tasks' embeddings runners are paused mid-task (after
    their first saved batch) stops the driver within seconds,
    kills both runners, starts nothing more and reports no task as failed; a
    rerun finishes both tasks. The runners sit in process groups of their
    own, so the driver alone decides how they stop: Lightning would swallow
    the interrupt and score a half-trained predictor."""

    root = tmp_path / "tasks"
    root.mkdir()
    helpers.make_scene_task(root)
    helpers.make_event_task(root)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    cmd = _driver(root, tmp_path / "out", "--jobs", "2")
    log, pause_dir = tmp_path / "driver.out", tmp_path / "pause"
    with log.open("w") as fh:
        # SIG_DFL: a shell that runs the suite in the background (`cmd &`) hands it SIGINT ignored, and
        # Python then never raises KeyboardInterrupt; a terminal's foreground job has the default
        proc = subprocess.Popen(_paused_driver(pause_dir, "embeddings", cmd), stdout=fh, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO, process_group=0,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert _wait_for(lambda: len(_paused(pause_dir, "embeddings")) == 2, proc, timeout=300), log.read_text()
        runners = _children(proc.pid)
        assert len(runners) == 2, runners
        assert all(os.getpgid(r) not in (proc.pid, os.getpgid(0)) for r in runners), "runner in a shared group"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert proc.returncode != 0 and "KeyboardInterrupt" in out, out
    assert _all_dead_within(runners, 3), f"runners outlived the driver: {runners}"
    assert "FAILED" not in out and "predictions ..." not in out, out
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    scores = json.loads((tmp_path / "out" / "naive" / "scores.json").read_text())
    assert sorted(scores["tasks"]) == sorted(p.name for p in root.iterdir())
    assert scores["predictor_threads"] == {name: "1" for name in scores["tasks"]}
