"""Mutation testing of the core modules with mutmut; prints the share killed per module.

Why: a green suite says little unless breaking the code turns it red. mutmut
makes small changes (mutants) to one function at a time (an operator, a
constant, a dropped argument) and runs the tests that call that function; a
mutant is killed when a test fails. Each module runs against only the FAST
tests that cover it (MODULES below), in its own copy of the repository under
--work (default /tmp/hear-abt-mutation), so runs never touch the checkout.

    pip install -r requirements/dev.txt
    OMP_NUM_THREADS=1 python -m tools.mutation                 # every module
    OMP_NUM_THREADS=1 python -m tools.mutation frontend embed  # some of them
    OMP_NUM_THREADS=1 python -m tools.mutation --resume train/loop  # go on after an interruption
    OMP_NUM_THREADS=1 python -m tools.mutation --resume --sample 100 --seed 1 train/loop  # a random 100 of the untested
    python -m tools.mutation --report                          # figures of finished runs

Score = (killed + timeout) / all mutants; "no tests" (a function no covering
test calls) and "survived" count against it. Survivors are listed with
`--survivors`; docs/dev/mutation.md says which are equivalent and why.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the fast tests that exercise it (files, or file::test ids).
MODULES: dict[str, list[str]] = {
    "frontend": ["tests/test_frontend.py"],
    "embed": ["tests/test_embed.py"],
    "pooling": ["tests/test_embed.py", "tests/test_pooling.py"],
    "hear_api": ["tests/test_bad_input.py", "tests/test_hear_api.py"],
    "checkpoint": ["tests/test_checkpoint.py", "tests/test_bad_input.py"],
    "train/barlow": ["tests/test_train_barlow.py"],
    "train/augment": ["tests/test_train_augment.py"],
    "train/optim": ["tests/test_train_optim.py"],
    "train/loop": ["tests/test_train_loop.py"],
    "train/state": ["tests/test_train_loop.py"],
}
# mutmut's exit-code statuses that count as detected.
DETECTED = {"killed", "timeout"}
LEDGER = "results.json"  # in a module's work folder: every result so far (see _results)
COPY = ["hear_abt", "tests", "eval", "tools", "checkpoints", "pyproject.toml"]


def _work_dir(work: Path, module: str) -> Path:
    return work / module.replace("/", "_")


def prepare(module: str, work: Path) -> Path:
    """A fresh copy of the repository whose setup.cfg tells mutmut to mutate
    only hear_abt/<module>.py (the rest of the package is copied unchanged),
    with tools/mutation_conftest.py as its root conftest.py (true test
    durations, one temporary folder per session, removed after it)."""
    target = f"hear_abt/{module}.py"
    if not (ROOT / target).is_file():
        raise SystemExit(f"no module {target}")
    tests = [t for t in MODULES[module] if (ROOT / t.split("::")[0]).is_file()]
    d = _work_dir(work, module)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, d / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
        elif src.exists():
            shutil.copy(src, d / name)
    others = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hear_abt").rglob("*.py") if p.relative_to(ROOT).as_posix() != target)
    cfg = ["[mutmut]", "paths_to_mutate=hear_abt/", "do_not_mutate="]
    cfg += [f"    {p}" for p in others]
    shutil.copy(ROOT / "tools" / "mutation_conftest.py", d / "conftest.py")
    cfg += ["also_copy=", "    eval/", "    tools/", "    checkpoints/", "    conftest.py", "    tests/conftest.py", "    tests/helpers.py", "tests_dir="]
    cfg += [f"    {t}" for t in tests]
    (d / "setup.cfg").write_text("\n".join(cfg) + "\n")
    return d


def _meta_codes(module: str, work: Path) -> dict[str, int | None] | None:
    meta = _work_dir(work, module) / "mutants" / "hear_abt" / f"{module}.py.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else None


def _results(module: str, work: Path) -> dict[str, int | None] | None:
    """mutant -> mutmut exit code (None: not tested): the ledger of earlier
    invocations overlaid with the current .meta. Every `mutmut run` (3.3.1)
    regenerates the mutants and resets the .meta's results, so results.json
    in the work folder keeps them across invocations."""
    codes = _meta_codes(module, work)
    ledger_path = _work_dir(work, module) / LEDGER
    if not ledger_path.is_file():
        return codes
    merged = json.loads(ledger_path.read_text())
    for k, v in (codes or {}).items():
        if v is not None or k not in merged:
            merged[k] = v
    return merged


def _save_ledger(module: str, work: Path) -> dict[str, int | None]:
    """Write the merged results to the ledger and return them."""
    codes = _results(module, work) or {}
    if codes:
        path = _work_dir(work, module) / LEDGER
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(codes))
        os.replace(tmp, path)
    return codes


def untested_sample(module: str, work: Path, n: int, seed: int) -> list[str]:
    """n mutants without a result, drawn at random (seeded): on a module too
    slow to finish, the figure over a random sample is unbiased, where
    mutmut's own order (function by function) is not."""
    import random

    codes = _results(module, work)
    if codes is None:
        raise SystemExit(f"--sample needs a started run of {module} in {work} (run it once, or with --resume)")
    untested = sorted(k for k, v in codes.items() if v is None)
    return sorted(random.Random(seed).sample(untested, min(n, len(untested))))


def run(module: str, work: Path, children: int, resume: bool = False, names: list[str] | None = None) -> None:
    d = _work_dir(work, module)
    if resume and (d / "setup.cfg").is_file():
        # mutmut forgets earlier results at each start: keep them in the
        # ledger and name only the mutants still untested.
        codes = _save_ledger(module, work)
        if names is None and codes:  # no results at all (stopped before mutmut listed its mutants): run everything
            names = sorted(k for k, v in codes.items() if v is None)
    else:
        d = prepare(module, work)
    # No PYTHONPATH: mutmut puts mutants/ first on sys.path itself (a PYTHONPATH
    # entry for it, made before the folder exists, is cached as empty and lets
    # the unmutated install win). Tests that run hear_abt in a subprocess would
    # not see the mutants, so MODULES lists in-process tests only.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), CUDA_VISIBLE_DEVICES="")
    print(f"== {module}: mutmut run in {d}", flush=True)
    # Not `python -m mutmut`: that loads mutmut.__main__ twice (as __main__ and
    # from the mutants' trampolines), and the copy that records which tests
    # call which function is not the one that reads it: every mutant "no tests".
    cli = "from mutmut.__main__ import cli; cli()"
    if names == []:
        print(f"== {module}: no untested mutants left", flush=True)
        return
    try:
        subprocess.run([sys.executable, "-c", cli, "run", "--max-children", str(children), *(names or [])],
                       cwd=d, env=env, stdout=subprocess.DEVNULL if not os.environ.get("MUTATION_VERBOSE") else None)
    finally:  # an interrupted run keeps what it tested
        _save_ledger(module, work)


def statuses(module: str, work: Path) -> dict[str, str] | None:
    """mutant name -> status, from every invocation so far; None if not run."""
    codes = _results(module, work)
    if codes is None:
        return None
    from mutmut.__main__ import status_by_exit_code

    return {k: status_by_exit_code.get(v, f"exit {v}") for k, v in codes.items()}


def report(modules: list[str], work: Path, survivors: bool) -> None:
    print("| module | mutants | killed | survived | no tests | other | score |\n|---|---|---|---|---|---|---|")
    for m in modules:
        st = statuses(m, work)
        if st is None:
            print(f"| {m} | not run | | | | | |")
            continue
        c = Counter(st.values())
        det = sum(c[s] for s in DETECTED)
        other = len(st) - det - c["survived"] - c["no tests"]
        print(f"| {m} | {len(st)} | {det} | {c['survived']} | {c['no tests']} | {other} | {100 * det / max(1, len(st)):.0f}% |")
    if survivors:
        for m in modules:
            for name, s in sorted((statuses(m, work) or {}).items()):
                if s not in DETECTED:
                    print(f"{s}: {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"default: all of {list(MODULES)}")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hear-abt-mutation"))
    ap.add_argument("--children", type=int, default=1, help="mutants tested in parallel")
    ap.add_argument("--resume", action="store_true", help="go on with an interrupted run in --work: test only the mutants without a result, "
                    "with the code and tests of that run's copy (a fresh run copies them anew)")
    ap.add_argument("--sample", type=int, metavar="N", help="with --resume: test N untested mutants drawn at random (see --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", action="store_true", help="only print the figures of finished runs")
    ap.add_argument("--survivors", action="store_true", help="also list the mutants that were not killed")
    args = ap.parse_args(argv)
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        ap.error(f"unknown module(s) {sorted(unknown)}; known: {list(MODULES)}")
    modules = args.modules or list(MODULES)
    if not args.report:
        if args.sample is not None and not args.resume:
            ap.error("--sample goes with --resume (it draws from a started run's untested mutants)")
        for m in modules:
            names = untested_sample(m, args.work, args.sample, args.seed) if args.sample is not None else None
            run(m, args.work, args.children, args.resume, names)
    report(modules, args.work, args.survivors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
