"""Tests for eval/driver/: task table, heareval fix, score collection, leaderboard, driver.

The heareval tests run heareval's real runners on tiny generated tasks
(tests/helpers.py) with hearbaseline's naive module, so they need
scripts/install_hear.sh; they are skipped where heareval is not installed.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

from eval.driver import hear_tasks, leaderboard, scores, task_order
from eval.driver import run as eval_run

ROOT = Path(__file__).resolve().parents[1]
COMPAT = [sys.executable, "-m", "eval.driver.heareval_compat"]
DRIVER = [sys.executable, "-m", "eval.driver.run"]


def _env() -> dict[str, str]:
    """The peers (hearbaseline_naive) and the repo root (eval.driver) importable from any cwd."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    paths = [str(ROOT / "eval" / "driver" / "peers"), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


# ---------------------------------------------------------------- task table

def test_hear_tasks_are_the_18_with_paper_groups():
    tasks = hear_tasks.HEAR2021_TASKS
    assert len(tasks) == 18 and len({t.folder for t in tasks}) == 18
    counts = {g: sum(t.group == g for t in tasks) for g in hear_tasks.GROUPS}
    assert counts == {"speech": 6, "env": 3, "music": 7, "event": 2}
    paper = json.loads(leaderboard.PAPER_FILE.read_text())["models"]
    for model, by_key in paper.items():
        assert set(by_key) == set(hear_tasks.BY_KEY), model


def test_mini_tasks_are_grouped_by_what_they_mirror():
    group = hear_tasks.task_group
    assert group("esc50-v2.0.0-full") == "env"
    assert group("mini_kws-v1.0-full", {"mirrors_group": "speech"}) == "speech"
    assert group("mini_sfx-v1.0-full", {"mirrors_group": "environment"}) == "env"
    assert group("mini_pitch-v1.0-full", {"mirrors_task": "nsynth_pitch-v2.2.3-5h"}) == "music"
    assert group("mini_drum_stroke-v1.0-full", {"mirrors_hear_task": "Mridangam Stroke (stroke class)"}) == "music"
    assert group("mini_voxlingua-v1.0-full", {"mirrors_hear_task": "VoxLingua107 top 10"}) == "speech"
    assert group("mini_esc50-v1.0-full", {}) == "env"  # by name, without the mini_ prefix
    assert group("mini_onsets-v1.0-full", {"embedding_type": "event"}) == "event"
    assert group("whatever-v1.0-full", {"embedding_type": "scene"}) == "other"
    with pytest.raises(ValueError, match="unknown task group"):
        group("x", {"mirrors_group": "vision"})


# ---------------------------------------------------------------- heareval fix

def test_lightning_ignores_herevals_epoch_assignment_and_the_fix_restores_it():
    """The root cause of KeyError: 50, shown without training anything."""
    import pytorch_lightning as pl

    from eval.driver import heareval_compat

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit_loop.current_epoch = 49  # what heareval does before testing
    assert trainer.current_epoch == 0  # ... and Lightning >= 1.6 does not see it

    wrapped = heareval_compat._best_epoch_test(lambda **kw: kw["grid_point"].trainer.current_epoch)
    assert wrapped(embedding_path=None, grid_point=SimpleNamespace(trainer=trainer, epoch=49)) == 49

    from heareval.predictions import task_predictions as tp

    heareval_compat.apply()
    heareval_compat.apply()  # idempotent: wrapped once
    assert tp.task_predictions_test.__wrapped__.__module__ == tp.__name__


def test_predictor_seed_replaces_herevals_fixed_seed(monkeypatch):
    import inspect
    import random

    import torch
    from heareval.predictions import task_predictions as tp

    from eval.driver import heareval_compat

    # heareval seeds each task through this module-level name, with 42: the name the patch replaces
    assert "seed_everything(42" in inspect.getsource(tp.task_predictions)
    monkeypatch.setattr(tp, "seed_everything", tp.seed_everything)  # restored after the test
    heareval_compat.seed_predictions(5)
    heareval_compat.seed_predictions(7)  # a second call replaces the first, it does not stack
    tp.seed_everything(42, workers=False)
    assert torch.initial_seed() == 7
    drawn = random.random()
    random.seed(7)
    assert drawn == random.random()


@pytest.mark.parametrize("seed", ["x", "-1", str(2**32)])  # out of range: Lightning would swap it for a random one
def test_compat_launcher_rejects_a_predictor_seed_that_is_not_a_usable_integer(tmp_path, seed):
    r = subprocess.run([*COMPAT, "predictions", "--predictor-seed", seed,
                        str(tmp_path)], env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "--predictor-seed takes an integer from 0 to 4294967295" in r.stderr


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory) -> Path:
    from helpers import make_event_task, make_scene_task

    root = tmp_path_factory.mktemp("tasks")
    make_scene_task(root)
    make_event_task(root)
    return root


@pytest.fixture(scope="session")
def event_embeddings(tiny_tasks, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb")
    subprocess.run([sys.executable, "-m", "heareval.embeddings.runner", "hearbaseline_naive",
                    "--tasks-dir", str(tiny_tasks), "--task", "tiny_event-v1.0-full",
                    "--embeddings-dir", str(out)], env=_env(), cwd=out, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out / "hearbaseline_naive" / "tiny_event-v1.0-full"


def _predict(cmd_head: list[str], emb: Path, tmp: Path) -> subprocess.CompletedProcess:
    task = tmp / emb.name
    shutil.copytree(emb, task)
    return subprocess.run([*cmd_head, str(task), "--grid", "faster", "--grid-points", "1"],
                          env=_env(), cwd=tmp, capture_output=True, text=True)


def test_event_task_fails_with_plain_heareval(event_embeddings, tmp_path):
    r = _predict([sys.executable, "-m", "heareval.predictions.runner"], event_embeddings, tmp_path)
    assert r.returncode != 0 and "KeyError" in r.stderr
    assert "epoch_best_postprocessing_or_default" in r.stderr


def test_event_task_passes_through_compat_launcher(event_embeddings, tmp_path):
    r = _predict([*COMPAT, "predictions"], event_embeddings, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / event_embeddings.name / "test.predicted-scores.json").read_text())
    assert "test_score" in result["test"]


def test_compat_embeddings_launcher_runs_herevals_runner(tiny_tasks, tmp_path):
    """The --gpu path's launcher; on a CPU machine its TensorFlow check swap is a no-op."""
    r = subprocess.run([*COMPAT, "embeddings", "hearbaseline_naive",
                        "--tasks-dir", str(tiny_tasks), "--task", "tiny_scene-v1.0-full",
                        "--embeddings-dir", str(tmp_path)], env=_env(), cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "hearbaseline_naive" / "tiny_scene-v1.0-full" / ".done.embeddings").exists()


# ---------------------------------------------------------------- scores + leaderboard

def _fake_scores(task_dir: Path, fold_scores: dict[str, float], group: str = "music") -> None:
    task_dir.mkdir(parents=True)
    (task_dir / "task_metadata.json").write_text(json.dumps({"evaluation": ["top1_acc"], "mirrors_group": group}))
    (task_dir / scores.SCORES_FILE).write_text(json.dumps(
        {**{k: {"test_score": v, "test_top1_acc": v} for k, v in fold_scores.items()},
         "aggregated_scores": {}, "hparams": {}, "score_mode": "max"}))


def test_task_score_mean_std_over_folds_and_nan_kept_as_none(tmp_path):
    _fake_scores(tmp_path / "a", {"fold00": 0.5, "fold01": 0.7, "fold02": 0.9})
    s = scores.task_score(tmp_path / "a")
    assert s["metric"] == "top1_acc" and math.isclose(s["mean"], 0.7) and math.isclose(s["std"], 0.2)
    _fake_scores(tmp_path / "b", {"test": float("nan")})
    s = scores.task_score(tmp_path / "b")
    assert s["mean"] is None and s["std"] is None and s["folds"] == {"test": None}


def _write_run(results: Path, tag: str, values: dict[str, float]) -> None:
    tasks = {f: {"metric": "top1_acc", "mean": v, "std": None, "folds": {"test": v},
                 "group": hear_tasks.task_group(f), "paper_key": hear_tasks.paper_key(f)}
             for f, v in values.items()}
    scores.write_scores(results / tag / "scores.json",
                        {"tag": tag, "module": "m", "model": None, "model_options": {}, "grid": "fast",
                         "grid_points": 1, "timing_s": {}}, tasks)


def test_leaderboard_without_a_random_run_says_how_to_make_one(tmp_path):
    _write_run(tmp_path, "abt", {"esc50-v2.0.0-full": 0.60})
    assert leaderboard.main(["--results-dir", str(tmp_path)]) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| abt | 0.600 |" in md and "No run tagged `random` yet" in md


def test_leaderboard_has_paper_rows_group_means_and_gain_over_random(tmp_path):
    _write_run(tmp_path, "random", {"esc50-v2.0.0-full": 0.40, "beijing_opera-v1.0-hear2021-full": 0.50})
    _write_run(tmp_path, "abt", {"esc50-v2.0.0-full": 0.60, "beijing_opera-v1.0-hear2021-full": 0.75})
    assert leaderboard.main(["--results-dir", str(tmp_path), "--random-tag", "random"]) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| abt | 0.600 | 0.750 | 0.600 | 0.750 |" in md
    assert "| ABT (paper) | 0.786 | 0.966 |" in md  # env column first, then music
    _write_run(tmp_path, "mixed", {"esc50-v2.0.0-full": 0.30, "beijing_opera-v1.0-hear2021-full": 0.80})
    assert leaderboard.main(["--results-dir", str(tmp_path), "--random-tag", "random"]) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| abt | +50.0% | +50.0% | +50.0% | +50.0% | 2/2 | +50.0% |" in md
    assert "| mixed | -25.0% | +60.0% | -25.0% | +60.0% | 1/2 | +17.5% |" in md
    assert (tmp_path / "leaderboard_env.png").stat().st_size > 1000
    # a run with its own random reference (its normalisation) is compared with that one
    _write_run(tmp_path, "random2", {"esc50-v2.0.0-full": 0.50, "beijing_opera-v1.0-hear2021-full": 0.60})
    _write_run(tmp_path, "abt2", {"esc50-v2.0.0-full": 0.75, "beijing_opera-v1.0-hear2021-full": 0.80})
    assert leaderboard.main(["--results-dir", str(tmp_path), "--random-tag", "random", "--random-for", "abt2=random2"]) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| abt2 | +50.0% | +33.3% | +50.0% | +33.3% | 2/2 | +41.7% | +50.0% | random2 |" in md
    assert "| abt | +50.0% | +50.0% | +50.0% | +50.0% | 2/2 | +50.0% | +41.7% | random |" in md
    assert not re.search(r"^\| random2? \|", md.split("## %↑RAND")[1], re.M)  # references get no row of their own
    with pytest.raises(SystemExit, match="nope"):
        leaderboard.main(["--results-dir", str(tmp_path), "--random-for", "abt2=nope"])
    # a mean of two random seeds as the reference: (0.45, 0.55) here
    assert leaderboard.main(["--results-dir", str(tmp_path), "--random-for", "abt2=random+random2"]) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| abt2 | +66.7% | +45.5% | +66.7% | +45.5% | 2/2 | +56.1% | +55.1% | random+random2 |" in md
    assert "| random+random2 | 0.450 | 0.550 |" in md.split("## %↑RAND")[0]  # the reference's numbers are shown
    assert not re.search(r"^\| random2? \|", md.split("## %↑RAND")[1], re.M)
    with pytest.raises(SystemExit, match=r"random\+nope"):
        leaderboard.main(["--results-dir", str(tmp_path), "--random-for", "abt2=random+nope"])
    assert (tmp_path / "leaderboard_music.png").is_file()
    # the plots can be limited to some rows; the tables keep them all
    before = (tmp_path / "leaderboard_music.png").stat().st_size
    assert leaderboard.main(["--results-dir", str(tmp_path), "--plot-rows", "abt", "ABT (paper)"]) == 0
    assert (tmp_path / "leaderboard_music.png").stat().st_size < before
    assert "| abt2 |" in (tmp_path / "leaderboard.md").read_text()
    with pytest.raises(SystemExit, match="nope"):
        leaderboard.main(["--results-dir", str(tmp_path), "--plot-rows", "abt", "nope"])


def test_leaderboard_counts_only_gains_larger_than_the_rounding_noise(tmp_path):
    env, music = "esc50-v2.0.0-full", "beijing_opera-v1.0-hear2021-full"
    _write_run(tmp_path, "random", {env: 0.40, music: 0.50})
    _write_run(tmp_path, "random-fp16", {env: 0.45, music: 0.49})  # the same weights, rounded: noise .05 and .01
    _write_run(tmp_path, "abt", {env: 0.43, music: 0.75})  # above on both, but on env by less than the noise
    args = ["--results-dir", str(tmp_path), "--random-tag", "random", "--noise-pair", "random=random-fp16"]
    assert leaderboard.main(args) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| random vs random-fp16 | 0.050 | 0.010 |" in md and "| **largest** | 0.050 | 0.010 |" in md
    assert re.search(r"^\| abt \|.*\| 2/2 \| [^|]+ \| [^|]+ \| 1/2 \|$", md, re.M), md
    assert re.search(r"^\| random-fp16 \|.*\| 1/2 \| [^|]+ \| [^|]+ \| 0/2 \|$", md, re.M), md  # noise is not a gain
    with pytest.raises(SystemExit, match="nope"):
        leaderboard.main([*args[:-2], "--noise-pair", "random=nope"])
    with pytest.raises(SystemExit):
        leaderboard.main([*args[:-2], "--noise-pair", "random"])


def test_leaderboard_mean_rows_average_runs_and_serve_as_references(tmp_path):
    env, music = "esc50-v2.0.0-full", "beijing_opera-v1.0-hear2021-full"
    _write_run(tmp_path, "abt", {env: 0.50, music: 0.70})
    _write_run(tmp_path, "abt-p1", {env: 0.60})  # scored one task: the mean covers only that one
    _write_run(tmp_path, "random", {env: 0.40, music: 0.50})
    _write_run(tmp_path, "random-p1", {env: 0.50, music: 0.50})
    args = ["--results-dir", str(tmp_path), "--mean", "abt-2=abt+abt-p1", "--mean", "random-2=random+random-p1",
            "--random-for", "abt-2=random-2"]
    assert leaderboard.main(args) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    scores, gains = md.split("## %↑RAND")
    assert "    --mean abt-2=abt+abt-p1 \\\n    --mean random-2=random+random-p1 \\\n" in md  # how to regenerate it
    assert re.search(r"^\| abt-2 \| 0\.550 \| — \|", scores, re.M), scores  # (0.50 + 0.60) / 2; music not in both
    assert re.search(r"^\| abt-2 \| \+22\.2% \| — \|.*\| 1/1 \| .*\| random-2 \|$", gains, re.M), gains  # .55 vs .45
    # the default reference may be a mean too; one with a missing part is a note, as a missing tag is
    assert leaderboard.main(["--results-dir", str(tmp_path), "--random-tag", "random+random-p1"]) == 0
    assert "| abt | +11.1% | +40.0% |" in (tmp_path / "leaderboard.md").read_text()  # vs (.45, .50)
    assert leaderboard.main(["--results-dir", str(tmp_path), "--random-tag", "random+nope"]) == 0
    assert "No run tagged `random+nope` yet" in (tmp_path / "leaderboard.md").read_text()
    with pytest.raises(SystemExit, match="nope"):
        leaderboard.main(["--results-dir", str(tmp_path), "--mean", "x=abt+nope"])
    with pytest.raises(SystemExit, match="already a row"):
        leaderboard.main(["--results-dir", str(tmp_path), "--mean", "abt=abt+abt-p1"])
    with pytest.raises(SystemExit):
        leaderboard.main(["--results-dir", str(tmp_path), "--mean", "abt-2"])


# ---------------------------------------------------------------- the driver, end to end

@pytest.mark.slow
def test_driver_runs_resumes_and_collects(tiny_tasks, rand_ckpt, tmp_path):
    """hear_abt with random weights (the naive module predicts no onsets at
    all on the event task, so it could not show that one is scored)."""
    cmd = [*DRIVER, "--tasks-dir", str(tiny_tasks), "--model", str(rand_ckpt),
           "--tag", "random", "--grid", "faster", "--grid-points", "1", "--results-dir", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    assert first.returncode == 0, first.stdout + first.stderr
    data = json.loads((tmp_path / "random" / "scores.json").read_text())
    scene, event = data["tasks"]["tiny_scene-v1.0-full"], data["tasks"]["tiny_event-v1.0-full"]
    assert set(data["task_fingerprints"]) == {"tiny_scene-v1.0-full", "tiny_event-v1.0-full"}
    assert data["environment"]["heareval"] == metadata.version("heareval") and "torch" in data["environment"]
    assert scene["group"] == "music" and set(scene["folds"]) == {"fold00", "fold01", "fold02"}
    assert event["group"] == "event" and event["metric"] == "event_onset_200ms_fms" and set(event["folds"]) == {"test"}
    # Both tasks are trivially separable tones (tests/helpers.py, which also
    # fixes a grid that learns them). Scene: three pitches, chance 1/3. Event:
    # two tones' onsets; predicting none scores 0, onsets placed at random far
    # less than 0.8. Measured 2026-11-27: scene folds 1.0, 1.0, 1.0; event 1.0.
    # A pipeline that mixed up labels, clips or timestamps stays far below.
    assert scene["mean"] >= 0.8 and min(scene["folds"].values()) >= 0.6, scene
    assert event["mean"] >= 0.8, event

    again = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    assert again.returncode == 0 and again.stdout.count("done before, skipped") == 2

    other = subprocess.run([*cmd[:-4], "--grid", "fast", *cmd[-2:]], capture_output=True, text=True, env=_env())
    assert other.returncode != 0 and "tag already used" in other.stderr

    assert leaderboard.main(["--results-dir", str(tmp_path)]) == 0
    assert "| random |" in (tmp_path / "leaderboard.md").read_text()

    # another draw of heareval's predictor on the same embeddings: a new tag, the seed recorded and
    # passed on to heareval, the embeddings copied (byte for byte, no embeddings runner), the
    # source's own predictions untouched, and the event task, which needs the timestamp files, scored
    src_dirs = {d.name: d for d in (tmp_path / "random" / "work" / "embeddings").glob("*/*")}
    src_scores = {n: (d / "test.predicted-scores.json").read_bytes() for n, d in src_dirs.items()}
    # --jobs 2: both tasks' predictions start before either is scored, each runner on half the cores
    seeded = [*cmd, "--tag", "random-seed3", "--predictor-seed", "3", "--embeddings-from", "random", "--jobs", "2"]
    env = {k: v for k, v in _env().items() if k != "OMP_NUM_THREADS"}
    r = subprocess.run(seeded, capture_output=True, text=True, env=env)  # the last --tag wins
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("embeddings copied from random") == 2
    # longest first, by what is left (the predictions) as the first run timed them
    first_timing = json.loads((tmp_path / "random" / "scores.json").read_text())["timing_s"]
    order = re.search(r"^longest first: (.*)$", r.stdout, re.M).group(1)
    expected = sorted(first_timing, key=lambda n: -first_timing[n]["predictions"])
    assert order == ", ".join(f"{n} ~{first_timing[n]['predictions']:.0f} s" for n in expected), order
    lines = r.stdout.splitlines()
    started = [i for i, line in enumerate(lines) if line.endswith("predictions ...")]
    scored = [i for i, line in enumerate(lines) if line.endswith(" s)") and "embeddings ok" not in line]
    assert len(started) == len(scored) == 2 and max(started) < min(scored), r.stdout
    data = json.loads((tmp_path / "random-seed3" / "scores.json").read_text())
    assert data["predictor_seed"] == 3 and data["embeddings_copied_from"] == {n: "random" for n in src_dirs}
    assert data["predictor_threads"] == {n: str(max(1, len(os.sched_getaffinity(0)) // 2)) for n in src_dirs}
    assert data["tasks"]["tiny_event-v1.0-full"]["mean"] is not None
    work = tmp_path / "random-seed3" / "work"
    assert not list((work / "logs").glob("*.embeddings.log"))
    log = (work / "logs" / "tiny_scene-v1.0-full.predictions.log").read_text()
    assert "seed set to 3" in log and "seed set to 42" not in log
    for name, d in src_dirs.items():
        copy = next(work.glob(f"embeddings/*/{name}"))
        npys = sorted(f.name for f in d.glob("*.embeddings.npy"))
        assert npys and npys == sorted(f.name for f in copy.glob("*.embeddings.npy"))
        assert all((d / f).read_bytes() == (copy / f).read_bytes() for f in npys)
        assert (d / "test.predicted-scores.json").read_bytes() == src_scores[name]

    def refused(tag: str, *extra: str) -> str:  # before anything is written
        run = subprocess.run([*cmd, "--tag", tag, *extra], capture_output=True, text=True, env=_env())
        assert run.returncode != 0 and not (tmp_path / tag).exists(), run.stdout
        return run.stderr

    other = tmp_path / "other.pt"
    other.write_bytes(rand_ckpt.read_bytes() + b"\0")
    assert "model_sha256 differs" in refused("x1", "--embeddings-from", "random", "--model", str(other))
    assert "no " in refused("x2", "--embeddings-from", "nosuchtag")
    scores_path = tmp_path / "random" / "scores.json"
    stored = json.loads(scores_path.read_text())
    scores_path.write_text(json.dumps({**stored, "task_fingerprints": {n: "0" * 16 for n in src_dirs}}))
    assert "another build" in refused("x3", "--embeddings-from", "random")
    del stored["model_sha256"]
    scores_path.write_text(json.dumps(stored))
    assert "predates" in refused("x4", "--embeddings-from", "random")


@pytest.mark.slow
def test_driver_on_the_small_minihear_suite(minihear_small, rand_ckpt, tmp_path):
    """heareval's two runners complete on every mini-HEAR task with a random
    hear_abt checkpoint, and a leaderboard with numbers comes out (reduced
    grid: this proves the plumbing, not the scores). Two tasks at a time
    (--jobs 2): every kind of task through the parallel path, and 97 s
    instead of 215 s one task at a time (2 cores, 2026-11-29)."""
    tasks = sorted(p.name for p in minihear_small.iterdir())
    assert len(tasks) >= 8
    cmd = [*DRIVER, "--tasks-dir", str(minihear_small), "--model", str(rand_ckpt),
           "--tag", "random", "--grid", "faster", "--grid-points", "1", "--results-dir", str(tmp_path), "--jobs", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    data = json.loads((tmp_path / "random" / "scores.json").read_text())
    assert sorted(data["tasks"]) == tasks
    groups = {t["group"] for t in data["tasks"].values()}
    assert groups == {"speech", "env", "music", "event"}
    for name, t in data["tasks"].items():
        assert t["mean"] is None or 0.0 <= t["mean"] <= 1.0, (name, t)
    # Every scene task is scored. The event task may not be: with one 'faster'
    # grid point its MLP predicts no onsets, and the onset F-measure of no
    # predictions is undefined (kept as None). That an event task is scored
    # end to end is shown by test_driver_runs_resumes_and_collects.
    unscored = {name for name, t in data["tasks"].items() if t["mean"] is None}
    assert all(data["tasks"][name]["group"] == "event" for name in unscored), unscored
    assert leaderboard.main(["--results-dir", str(tmp_path), "--random-tag", "random"]) == 0
    board = (tmp_path / "leaderboard.md").read_text()
    assert re.search(r"^\| random \|.*\d\.\d{3}", board, re.M), board


# ---------------------------------------------------------------- driver options

@pytest.mark.parametrize("extra, message", [
    (["--model-options", "{bad"], "--model-options is not JSON"),
    (["--model-options", "[1]"], "--model-options must be a JSON object"),
    (["--tag", "../../elsewhere"], "--tag must be a plain name"),
    (["--tag", "a/b"], "--tag must be a plain name"),
    (["--tag", ""], "--tag must be a plain name"),
    (["--embeddings-from", ".."], "--embeddings-from must be a plain name"),
    (["--grid-points", "0"], "--grid-points must be at least 1"),
    (["--predictor-seed", "-1"], "--predictor-seed must be from 0 to 4294967295"),
    (["--predictor-seed", str(2**32)], "--predictor-seed must be from 0 to 4294967295"),
    (["--jobs", "0"], "--jobs must be at least 1"),
])
def test_driver_refuses_bad_options_by_name(tmp_path, capsys, extra, message):
    """Each used to end in a traceback or to write or seed something else than asked: a tag
    with a path escaped the results folder, and Lightning swaps a seed out of range for a
    random one with only a warning."""
    argv = ["--tasks-dir", str(tmp_path), "--tag", "t", "--results-dir", str(tmp_path / "out"), *extra]
    with pytest.raises(SystemExit) as e:
        eval_run.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_driver_refuses_a_results_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit):
        eval_run.parse_args(["--tasks-dir", str(tmp_path), "--tag", "t", "--results-dir", str(tmp_path / "f")])
    assert "is not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------- --jobs: longest task first

def test_earlier_timings_are_medians_of_real_runs_at_the_same_grid(tmp_path):
    def tag(name: str, grid: str, timing: dict, **extra) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "scores.json").write_text(json.dumps({"grid": grid, "timing_s": timing, **extra}))

    tag("a", "fast", {"t1": {"embeddings": 10, "predictions": 100}, "t2": {"embeddings": 5}})
    tag("b", "fast", {"t1": {"embeddings": 30, "predictions": 300}})
    tag("c", "fast", {"t1": {"embeddings": 20, "predictions": 200}})
    tag("d", "default", {"t1": {"embeddings": 99, "predictions": 9999}, "t2": {"predictions": 700}})
    tag("e", "fast", {"t1": {"embeddings": 0.01, "predictions": 250}}, embeddings_copied_from={"t1": "a"})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "scores.json").write_text('{"grid": "fast", "timing_s": {"t1": {"predi')
    got = task_order.earlier_timings(tmp_path, "fast")
    # t1: same grid only (d ignored), e's copy time is no embedding time but its predictions count
    assert got["t1"] == {"embeddings": 20, "predictions": 225}
    assert got["t2"] == {"embeddings": 5, "predictions": 700}  # no fast timing of its predictions: any grid


def test_longest_first_starts_untimed_event_and_big_tasks_then_by_time_left(tmp_path):
    def task(name: str, kind: str, nbytes: int) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "task_metadata.json").write_text(json.dumps({"embedding_type": kind}))
        (d / "audio.bin").write_bytes(b"\0" * nbytes)
        return d

    folder_order = [task("a_scene_small", "scene", 10), task("b_scene_big", "scene", 5000),
                    task("c_event", "event", 10), task("d_timed", "scene", 1), task("e_timed_long", "scene", 1),
                    task("f_done", "scene", 1), task("g_copied", "scene", 1)]
    timings = {"d_timed": {"embeddings": 10, "predictions": 50}, "e_timed_long": {"embeddings": 5, "predictions": 500},
               "f_done": {"embeddings": 1000, "predictions": 1000}, "g_copied": {"predictions": 55},
               "a_scene_small": {"embeddings": 10}}  # its predictions were never timed
    left = {"f_done": (), "g_copied": ("predictions",)}
    order = [t.name for t in task_order.longest_first(folder_order, left, timings)]
    assert order == ["c_event", "b_scene_big", "a_scene_small", "e_timed_long", "d_timed", "g_copied", "f_done"]
    line = task_order.describe_order(task_order.longest_first(folder_order, left, timings), left, timings)
    assert "c_event (never timed)" in line and "e_timed_long ~505 s" in line and "g_copied ~55 s" in line


# ---------------------------------------------------------------- linear probe on saved embeddings

def test_linear_probe_reads_embeddings_in_label_order(minihear_small, tmp_path):
    """Embeddings that encode the label score near 1; the same files with the
    labels' codes shuffled across clips score near chance. A probe that paired
    embeddings with the wrong clips would fail the first assertion."""
    import numpy as np

    from eval.probes import linear_probe

    folder = "mini_speech_commands-v1.0-full"
    task_dir = minihear_small / folder
    vocab = sorted({lab for s in ("train", "valid", "test")
                    for labs in json.loads((task_dir / f"{s}.json").read_text()).values() for lab in labs})
    rng = np.random.default_rng(0)
    for tag, shuffle in (("encodes", False), ("shuffled", True)):
        for split in ("train", "valid", "test"):
            labels = json.loads((task_dir / f"{split}.json").read_text())
            files = sorted(labels)
            codes = [vocab.index(labels[f][0]) for f in files]
            if shuffle:
                codes = list(rng.permutation(codes))
            out = tmp_path / tag / "work" / "embeddings" / "hear_abt" / folder / split
            out.mkdir(parents=True)
            for f, c in zip(files, codes):
                x = rng.normal(0, 0.3, 16)
                x[c] += 3.0
                np.save(out / f"{f}.embedding.npy", x.astype(np.float32))
    good = linear_probe.probe_scores(minihear_small, tmp_path, "encodes")
    bad = linear_probe.probe_scores(minihear_small, tmp_path, "shuffled")
    assert good[folder] > 0.95
    assert bad[folder] < 0.4
    # The table's last two columns: the mean relative gain (%↑RAND) and the mean gap closed over the --random-tag row.
    out = tmp_path / "probe.md"
    assert linear_probe.main(["encodes", "shuffled", "--tasks-dir", str(minihear_small),
                              "--results-dir", str(tmp_path), "--random-tag", "shuffled", "--out", str(out)]) == 0
    rows = {line.split(" | ")[0].strip("| "): line for line in out.read_text().splitlines()[2:]}
    gain = 100 * (good[folder] - bad[folder]) / bad[folder]
    gap = 100 * (good[folder] - bad[folder]) / (1 - bad[folder])
    assert rows["encodes"].rstrip(" |").endswith(f"{gain:+.1f}% | {gap:+.1f}%")
    assert rows["shuffled"].rstrip(" |").endswith("+0.0% | +0.0%")
