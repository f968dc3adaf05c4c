"""The eval driver with one stage of its heareval runners paused, for the
fault tests: they place a kill at the pause (an event), not after a delay.

    python tests/paused_eval_driver.py PAUSE_DIR STAGE [eval.driver.run options]

STAGE is where each runner of that stage stops, for good:
  - ``embeddings``: after heareval saved the first batch of clip embeddings,
    before it writes ``.done.embeddings``;
  - ``predictions``: after heareval trained the first grid point, before it
    scores the test folds and writes ``prediction-done.json``.
There the runner writes ``PAUSE_DIR/STAGE-<pid>.paused`` and waits for a
signal. The test then kills or interrupts the driver; the driver's runners
die with it, as they would at that moment of a real run.

Run with the repository root on PYTHONPATH. The driver is monkeypatched here
(its runner command is routed through this file), so eval/ holds no test hook.
"""
from __future__ import annotations

import functools
import os
import runpy
import signal
import sys
from pathlib import Path

STAGES = ("embeddings", "predictions")


def _pause_after(original, pause_dir: Path, stage: str):
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        original(*args, **kwargs)  # the stage has saved or trained something: mid-stage from here
        marker = pause_dir / f"{stage}-{os.getpid()}.paused"
        tmp = marker.with_suffix(".tmp")
        tmp.write_text("paused\n")
        tmp.replace(marker)  # the test sees the marker whole, or not at all
        while True:
            signal.pause()

    return wrapper


def _runner(pause_dir: Path, stage: str, argv: list[str]) -> None:
    """Run ``python -m MODULE ARGS`` (argv = ["-m", MODULE, *ARGS]) with the pause installed."""
    if stage == "embeddings":
        from heareval.embeddings import task_embeddings as te

        for name in ("save_scene_embedding_and_labels", "save_timestamp_embedding_and_labels"):
            setattr(te, name, _pause_after(getattr(te, name), pause_dir, stage))
    else:
        from heareval.predictions import task_predictions as tp

        tp.task_predictions_train = _pause_after(tp.task_predictions_train, pause_dir, stage)
    assert argv[0] == "-m", argv
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


def _driver(pause_dir: Path, stage: str, argv: list[str]) -> int:
    from eval.driver import run

    real_run_logged = run._run_logged

    def run_logged(cmd, log, env, cwd, stop):
        if log.name.endswith(f".{stage}.log"):  # <task>.<stage>.log: a runner of the paused stage
            cmd = [cmd[0], str(Path(__file__).resolve()), "--runner", str(pause_dir), stage, *cmd[1:]]
        return real_run_logged(cmd, log, env, cwd, stop)

    run._run_logged = run_logged
    return run.run(run.parse_args(argv))


def main(argv: list[str]) -> int:
    runner = argv[:1] == ["--runner"]
    pause_dir, stage, rest = Path(argv[runner]), argv[runner + 1], argv[runner + 2:]
    if stage not in STAGES:
        raise SystemExit(f"STAGE must be one of {STAGES}, not {stage!r}")
    if runner:
        _runner(pause_dir, stage, rest)
        return 0
    pause_dir.mkdir(parents=True, exist_ok=True)
    return _driver(pause_dir, stage, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
