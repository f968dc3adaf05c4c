"""Run heareval over a folder of HEAR tasks for one model and collect its scores.

    python -m eval.driver.run --tasks-dir tasks --model checkpoints/abt.pt --tag abt
    python -m eval.driver.run --tasks-dir tasks --module hearbaseline_naive --tag naive --grid fast

For each task folder it runs heareval's embeddings runner, then its
predictions runner (through eval/driver/heareval_compat.py, which fixes event tasks
on current Lightning), each as a subprocess with its log under
``eval/results/<tag>/work/logs/``. It resumes: a task whose embeddings carry
heareval's ``.done.embeddings`` marker is not embedded again, and one with
``prediction-done.json`` and ``test.predicted-scores.json`` is not trained
again. After every task the scores so far go to ``eval/results/<tag>/scores.json``,
with a content fingerprint of each task folder (eval/driver/task_fingerprint.py): a
tag is not resumed on a task folder that has since been rebuilt differently.

GPU: heareval's embeddings runner refuses to start when torch sees a GPU and
TensorFlow (tensorflow-cpu here) does not. Without ``--gpu`` both runners get
``CUDA_VISIBLE_DEVICES=""`` and run on CPU. With ``--gpu`` the embeddings
runner starts through the compat launcher, which skips that TensorFlow check
for torch modules, and the predictions runner trains on GPU 0.

``--embeddings-from TAG`` takes a task's embeddings from an earlier tag
instead of embedding again, so another predictor seed or grid costs only the
predictions. It copies only what heareval's embeddings runner wrote (never
that tag's predictions), and only when the module, the model file's sha256,
the model options and the task folder's fingerprint are the ones this run
would embed with; anything else is refused with the reason.

``--jobs N`` runs N tasks at once, each runner with ``OMP_NUM_THREADS`` =
cores / N unless it is set already: heareval's predictor trains small MLPs
that keep few cores busy. Its scores depend on the thread count at rounding
level (the same thread count gives the same scores, run alone or beside
others), so ``scores.json`` records each task's (``predictor_threads``).
Tasks start longest first, by the times earlier tags in the results folder
recorded for what is left of each (eval/driver/task_order.py). Ctrl-C stops every
task's runners; a rerun resumes as after a kill.

Each task folder is checked first (eval/driver/task_check.py): a missing or corrupt
split file, a missing clip or audio at the wrong sample rate fails that task
with the file named, and the other tasks still run. Killed at any moment
(its runners die with it), a rerun finishes and scores as an uninterrupted run.

Why subprocesses: each runner is heareval's own CLI, so a crash, a CUDA
out-of-memory or a Ctrl-C loses at most one task, and what we run is exactly
what other HEAR participants run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eval.driver.hear_tasks import find_tasks, read_metadata, task_group
from eval.driver.heareval_compat import MAX_SEED
from eval.driver.scores import collect, write_scores
from eval.driver.task_check import check_task, describe
from eval.driver.task_fingerprint import file_sha256, task_fingerprint
from eval.driver.task_order import STAGES, describe_order, earlier_timings, longest_first

DRIVER_DIR = Path(__file__).resolve().parent
EVAL_DIR = DRIVER_DIR.parent
REPO = EVAL_DIR.parent
DEFAULT_RESULTS = EVAL_DIR / "results"
HEAREVAL_SEED = 42  # heareval.predictions.task_predictions seeds every task with it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_argument_group("what to evaluate")
    what.add_argument("--tasks-dir", type=Path, required=True, help="folder of HEAR task folders")
    what.add_argument("--tag", required=True, help="name of this run: eval/results/<tag>/")
    what.add_argument("--module", default="hear_abt", help="HEAR module to import (default: hear_abt)")
    what.add_argument("--model", type=Path, default=None, help="checkpoint passed to load_model (default: the module's own)")
    what.add_argument("--model-options", default="{}", help="JSON dict of load_model kwargs")
    what.add_argument("--tasks", nargs="+", default=None, help="only these task folder names")
    how = p.add_argument_group("how")
    how.add_argument("--grid", default="default", choices=["default", "fast", "faster"],
                     help="heareval's hyperparameter grid (fast/faster: fewer epochs)")
    how.add_argument("--grid-points", type=int, default=8, help="grid points tried per task (heareval default 8)")
    how.add_argument("--predictor-seed", type=int, default=HEAREVAL_SEED,
                     help="seed of heareval's predictor: grid points, MLP initialisation, batch order "
                          f"(default: heareval's own {HEAREVAL_SEED}); one seed is one draw, see docs/evaluation.md")
    how.add_argument("--embeddings-from", metavar="TAG", default=None,
                     help="reuse that tag's finished embeddings (same module, model sha256, model options and task "
                          "build) instead of embedding again, e.g. for another --predictor-seed")
    how.add_argument("--jobs", type=int, default=1,
                     help="tasks run at once (default 1). Each runner then gets OMP_NUM_THREADS = cores / jobs "
                          "unless you set it; heareval's scores depend on the thread count at rounding level, so "
                          "scores.json records it. Tasks start longest first, by earlier tags' timings (docs/evaluation.md)")
    how.add_argument("--gpu", action="store_true", help="embed and train on GPU 0 (default: CPU)")
    how.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="where <tag>/ goes (default: eval/results)")
    args = p.parse_args(argv)
    try:
        options = json.loads(args.model_options)
    except ValueError as e:
        p.error(f"--model-options is not JSON: {e}")
    if not isinstance(options, dict):
        p.error("--model-options must be a JSON object")
    for flag, tag in (("--tag", args.tag), ("--embeddings-from", args.embeddings_from)):
        if tag is not None and (tag in ("", ".", "..") or "/" in tag or os.sep in tag):
            p.error(f"{flag} must be a plain name (a folder under --results-dir), got {tag!r}")
    if args.results_dir.exists() and not args.results_dir.is_dir():
        p.error(f"--results-dir {args.results_dir} is not a folder")
    if args.grid_points < 1:
        p.error(f"--grid-points must be at least 1, got {args.grid_points}")
    if not 0 <= args.predictor_seed <= MAX_SEED:
        p.error(f"--predictor-seed must be from 0 to {MAX_SEED} (Lightning would swap it for a random seed), "
                f"got {args.predictor_seed}")
    if not args.tasks_dir.is_dir():
        p.error(f"--tasks-dir {args.tasks_dir} is not a folder")
    if args.model is not None and not args.model.is_file():
        p.error(f"--model {args.model} does not exist")
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.embeddings_from == args.tag:
        p.error("--embeddings-from names this run's own --tag")
    return args


def _env(gpu: bool, jobs: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:  # N runners with every core each would oversubscribe them
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
    # eval/driver/peers holds wrapper HEAR modules; the repo root holds hear_abt and eval.
    # A PYTHONPATH the user set comes first, so it can point at another copy.
    paths = [env.get("PYTHONPATH", ""), str(DRIVER_DIR / "peers"), str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the driver dies (Linux), so a killed
    driver leaves no heareval runner writing into a task that a rerun redoes.
    Linux sends it when the thread that started the child exits: with --jobs
    that is a pool thread, which lives until every task is done."""
    try:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _run_logged(cmd: list[str], log: Path, env: dict[str, str], cwd: Path,
                stop: threading.Event) -> tuple[int, float]:
    """(return code, seconds). The runner is killed when ``stop`` is set (by
    the driver's main thread, on Ctrl-C or another task's crash) or when this
    thread is interrupted; a stopped run returns -9 without starting one."""
    if stop.is_set():
        return -9, 0.0
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        # Its own process group: a terminal's Ctrl-C reaches the driver alone, which then kills every
        # runner. Otherwise a runner could exit first and be reported FAILED, or, inside Lightning
        # (which swallows KeyboardInterrupt in fit), go on to score a half-trained predictor.
        with subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, preexec_fn=preexec,
                              process_group=0) as proc:
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        if stop.is_set():
                            proc.kill()
            except BaseException:
                proc.kill()
                raise
    return rc, time.monotonic() - start


def _read_previous(scores_path: Path) -> dict:
    if not scores_path.is_file():
        return {}
    try:
        return json.loads(scores_path.read_text())
    except ValueError:
        print(f"warning: {scores_path} is unreadable; its scores are collected again", flush=True)
        return {}


def _embedding_dir(emb_root: Path, task: str) -> Path | None:
    hits = sorted(emb_root.glob(f"*/{task}"))
    return hits[0] if hits else None


# What heareval's embeddings runner writes into a task's folder, beside the
# per-clip folders its predictions runner never reads. The predictions runner
# adds its own files (scores, predictions, lightning_logs): those are not
# embeddings, and copying them would make heareval skip the task.
_EMBEDDING_FILES = ("*.embeddings.npy", "*.embedding-dimensions.json", "*.target-labels.pkl",
                    "*.filename-timestamps.json", "task_metadata.json", "labelvocabulary.csv", "profile.embeddings.json")
_DONE = ".done.embeddings"


def _embedded(emb_dir: Path | None) -> bool:
    return emb_dir is not None and (emb_dir / _DONE).exists()


def _predicted(emb_dir: Path) -> bool:
    return (emb_dir / "prediction-done.json").exists() and (emb_dir / "test.predicted-scores.json").exists()


def _stages_left(emb_root: Path, task: str, shared: dict[str, Path]) -> tuple[str, ...]:
    emb_dir = _embedding_dir(emb_root, task)
    if _embedded(emb_dir):
        return () if _predicted(emb_dir) else ("predictions",)
    return ("predictions",) if task in shared else STAGES


class SharedEmbeddings:
    """The finished embeddings of an earlier tag, and the checks that make
    reusing them give what embedding again would."""

    def __init__(self, results_dir: Path, tag: str, header: dict) -> None:
        self.tag, self.root = tag, results_dir / tag
        scores_path = self.root / "scores.json"
        if not scores_path.is_file():
            sys.exit(f"--embeddings-from {tag}: no {scores_path}")
        source = json.loads(scores_path.read_text())
        for key in ("module", "model_options", "model_sha256"):
            if key not in source:
                sys.exit(f"--embeddings-from {tag}: its scores.json does not record {key} (it predates "
                         "shared embeddings); embed again under this tag")
            if source[key] != header[key]:
                sys.exit(f"--embeddings-from {tag}: {key} differs: {source[key]!r} there, {header[key]!r} here")
        if header["model_sha256"] is None and source.get("environment") != header["environment"]:
            # the module's own default weights: only the installed packages say which they were
            sys.exit(f"--embeddings-from {tag}: the module's default model, but the installed packages differ "
                     f"({source.get('environment')} there, {header['environment']} here)")
        self.fingerprints: dict[str, str] = source.get("task_fingerprints", {})

    def task_dirs(self, fingerprints: dict[str, str], tasks: list[str]) -> dict[str, Path]:
        """task -> its finished embeddings there, for the tasks it has; exits
        when any was made from another build of the task."""
        found = {}
        for task in tasks:
            src = _embedding_dir(self.root / "work" / "embeddings", task)
            if not _embedded(src):
                continue
            if self.fingerprints.get(task) != fingerprints[task]:
                sys.exit(f"--embeddings-from {self.tag}: its {task} was embedded from another build of the task "
                         f"({self.fingerprints.get(task)} there, {fingerprints[task]} now)")
            found[task] = src
        return found

    @staticmethod
    def copy(src: Path, dst: Path) -> None:
        """Copy the embeddings, the done marker last: a copy cut short is redone."""
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        files = {f for pattern in _EMBEDDING_FILES for f in src.glob(pattern)}
        splits = [f.name.removesuffix(".embeddings.npy") for f in src.glob("*.embeddings.npy")]
        files |= {src / f"{split}.json" for split in splits if (src / f"{split}.json").is_file()}
        for f in sorted(files):
            shutil.copy2(f, dst / f.name)
        (dst / _DONE).touch()


def _check_settings(work: Path, settings: dict) -> None:
    """A tag's work folder belongs to one model setting; refuse to mix."""
    path = work / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            sys.exit(f"tag already used with other settings ({path}):\n  was {old}\n  now {settings}\n"
                     "use a new --tag, or delete that folder to start over")
    else:
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))


def fingerprints_or_exit(stored: dict[str, str], tasks: list[Path], tag: str) -> dict[str, str]:
    """The stored fingerprints updated with ``tasks``'; exits when a task a
    tag has worked on has since been rebuilt differently (its embeddings and
    scores belong to the other build)."""
    fingerprints = dict(stored)
    changed = []
    for task_dir in tasks:
        fp = task_fingerprint(task_dir)
        if fingerprints.get(task_dir.name, fp) != fp:
            changed.append(f"{task_dir.name} ({fingerprints[task_dir.name]} then, {fp} now)")
        fingerprints[task_dir.name] = fp
    if changed:
        sys.exit(f"{tag}: task folders changed since this tag's earlier run: {', '.join(changed)}. "
                 f"Its embeddings and scores belong to the earlier build; use a new --tag "
                 f"(or delete eval/results/{tag}/ to start over).")
    return fingerprints


# heareval pins none of these, and its scores for one checkpoint on one task
# build differed between two machines (docs/experiments/retraining.md, "Which builds of the
# real-audio tasks were scored"), so every scores.json says what it ran on.
ENV_PACKAGES = ("heareval", "hear-abt", "torch", "torchaudio", "pytorch-lightning", "lightning",
                "tensorflow-cpu", "tensorflow", "scikit-learn", "numpy")


def environment() -> dict[str, str]:
    """Python and the installed versions of the packages a score depends on."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ENV_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):  # e.g. lightning or tensorflow absent
            out[name] = metadata.version(name)
    return out


def run(args: argparse.Namespace) -> int:
    out = args.results_dir / args.tag
    work = out / "work"
    emb_root, logs = work / "embeddings", work / "logs"
    settings = {"module": args.module, "model": str(args.model.resolve()) if args.model else None,
                "model_options": json.loads(args.model_options), "grid": args.grid, "grid_points": args.grid_points}
    if args.predictor_seed != HEAREVAL_SEED:  # absent at heareval's own seed, so tags from before still resume
        settings["predictor_seed"] = args.predictor_seed
    tasks = all_tasks = find_tasks(args.tasks_dir)
    if args.tasks:
        missing = set(args.tasks) - {t.name for t in tasks}
        if missing:
            sys.exit(f"not in {args.tasks_dir}: {sorted(missing)}")
        tasks = [t for t in tasks if t.name in args.tasks]
    if not tasks:
        sys.exit(f"no task folders (with task_metadata.json) in {args.tasks_dir}")

    env = _env(args.gpu, args.jobs)
    scores_path = out / "scores.json"
    previous = _read_previous(scores_path)
    timing: dict[str, dict[str, float]] = previous.get("timing_s", {})
    fingerprints = fingerprints_or_exit(previous.get("task_fingerprints", {}), tasks, args.tag)
    failed: list[str] = []
    py, compat = sys.executable, ["-m", "eval.driver.heareval_compat"]
    header = {"tag": args.tag, **settings, "model_sha256": file_sha256(args.model) if args.model else None,
              "tasks_dir": str(args.tasks_dir.resolve()), "task_fingerprints": fingerprints, "environment": environment()}
    # the predictor's scores move with its thread count (float summation order), so each task's is kept
    threads: dict[str, str] = previous.get("predictor_threads", {})
    header["predictor_threads"] = threads
    copied: dict[str, str] = previous.get("embeddings_copied_from", {})  # task -> the tag its embeddings came from
    if copied or args.embeddings_from:
        header["embeddings_copied_from"] = copied
    shared: dict[str, Path] = {}  # task -> the source tag's embeddings of it
    if args.embeddings_from:
        shared = SharedEmbeddings(args.results_dir, args.embeddings_from, header).task_dirs(
            fingerprints, [t.name for t in tasks])
    _check_settings(work, settings)  # after every refusal above, so a refused run leaves no folder behind
    # the fingerprints go to disk before any work, so a run killed mid-task is checked on resume too
    kept = previous.get("tasks", {})  # scores whose work/ folder was deleted stay until their task runs again
    write_scores(scores_path, {**header, "timing_s": timing}, {**kept, **collect(emb_root, all_tasks)})
    print(f"{args.tag}: {len(tasks)} tasks from {args.tasks_dir}, module {args.module}, grid {args.grid}", flush=True)
    if args.jobs > 1:  # one task at a time takes as long in any order
        left = {t.name: _stages_left(emb_root, t.name, shared) for t in tasks}
        timings = earlier_timings(args.results_dir, args.grid)
        tasks = longest_first(tasks, left, timings)
        print(describe_order(tasks, left, timings), flush=True)

    lock, stop = threading.Lock(), threading.Event()  # lock: timing, copied, failed and scores.json
    running: set[str] = set()  # tasks whose heareval files may be half-written: never collected

    def run_task(i: int, task_dir: Path) -> None:
        name = task_dir.name

        def runner_failed(runner: str, rc: int) -> None:
            if not stop.is_set():  # a stopped run's runners were killed on purpose
                print(f"{prefix}: {runner} FAILED (rc {rc}), see {logs / f'{name}.{runner}.log'}", flush=True)
            with lock:
                failed.append(name)
                running.discard(name)

        emb_dir = _embedding_dir(emb_root, name)
        embedded = _embedded(emb_dir)
        problems = [] if embedded else check_task(task_dir)
        if problems:
            print(f"[{i}/{len(tasks)}] {name}: INVALID task folder, skipped: {describe(problems)}", flush=True)
            with lock:
                failed.append(name)
            return
        prefix = f"[{i}/{len(tasks)}] {name} ({task_group(name, read_metadata(task_dir))})"
        with lock:
            t = timing.setdefault(name, {})
            running.add(name)
        src = None if embedded else shared.get(name)
        if src is not None:
            start = time.monotonic()
            SharedEmbeddings.copy(src, emb_root / src.parent.name / name)  # heareval names it by module
            with lock:
                t["embeddings"] = time.monotonic() - start
                copied[name] = args.embeddings_from
            emb_dir, embedded = _embedding_dir(emb_root, name), True
            print(f"{prefix}: embeddings copied from {args.embeddings_from}", flush=True)
        elif args.embeddings_from and not embedded:
            print(f"{prefix}: {args.embeddings_from} has no finished embeddings of it; embedding here", flush=True)
        if not embedded:
            with lock:
                copied.pop(name, None)
            print(f"{prefix}: embeddings ...", flush=True)
            runner = [*compat, "embeddings"] if args.gpu else ["-m", "heareval.embeddings.runner"]
            cmd = [py, *runner, args.module, "--tasks-dir", str(args.tasks_dir.resolve()), "--task", name,
                   "--embeddings-dir", str(emb_root.resolve()), "--model-options", args.model_options]
            if args.model:
                cmd += ["--model", str(args.model.resolve())]
            rc, seconds = _run_logged(cmd, logs / f"{name}.embeddings.log", env, work, stop)
            with lock:
                t["embeddings"] = seconds
            emb_dir = _embedding_dir(emb_root, name)
            if rc or emb_dir is None:
                runner_failed("embeddings", rc)
                return
        if _predicted(emb_dir):
            print(f"{prefix}: done before, skipped", flush=True)
        else:
            (emb_dir / "prediction-done.json").unlink(missing_ok=True)  # heareval would skip the task without scores
            print(f"{prefix}: embeddings ok ({t.get('embeddings', 0):.0f} s); predictions ...", flush=True)
            seed = ["--predictor-seed", str(settings["predictor_seed"])] if "predictor_seed" in settings else []
            cmd = [py, *compat, "predictions", *seed, str(emb_dir.resolve()), "--grid", args.grid,
                   "--grid-points", str(args.grid_points)]
            if args.gpu:
                cmd += ["--gpus", "[0]"]
            env_pred = {**env, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # see heareval_compat.py
            rc, seconds = _run_logged(cmd, logs / f"{name}.predictions.log", env_pred, work, stop)
            with lock:
                t["predictions"] = seconds
                threads[name] = env.get("OMP_NUM_THREADS", "torch's default")
            if rc:
                runner_failed("predictions", rc)
                return
        with lock:
            running.discard(name)
            finished = [d for d in all_tasks if d.name not in running]
            task_scores = {**kept, **collect(emb_root, finished)}  # earlier --tasks subsets too
            write_scores(scores_path, {**header, "timing_s": timing}, task_scores)
        s = task_scores.get(name, {})
        mean, std = s.get("mean"), s.get("std")
        shown = "nan" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")
        print(f"{prefix}: {s.get('metric', '?')} {shown} ({t.get('predictions', 0):.0f} s)", flush=True)

    if args.jobs == 1:
        for i, task_dir in enumerate(tasks, 1):
            run_task(i, task_dir)
    else:
        pool = ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="task")
        try:
            for future in [pool.submit(run_task, i, d) for i, d in enumerate(tasks, 1)]:
                future.result()
        except BaseException:  # Ctrl-C, or a bug in one task: stop the others' runners too
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()

    print(f"scores: {scores_path}" + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(parse_args()))
