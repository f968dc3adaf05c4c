"""Write the leaderboard (markdown + one bar plot per group) from every run's scores.json.

    python -m eval.driver.leaderboard [--results-dir eval/results] [--random-tag random]
    python -m eval.driver.leaderboard --random-for RUN=random-s0+random-s1   # a mean of seeds as RUN's reference
    python -m eval.driver.leaderboard --mean abt-3seeds=abt+abt-p1+abt-p2      # a row: the mean of several runs

One row per tag (a model run by eval/driver/run.py), one column per task, grouped as
the paper groups them (speech, env, music, event), plus group means. The
paper's ABT and BYOL-A rows (eval/driver/paper_scores.json) sit beside ours where a
column is an official HEAR task. %↑RAND is each score's relative gain over
the run named by ``--random-tag`` (the same encoder with random weights), as
the paper reports it: 100 * (score - random) / random. "Gap closed" is the
share of the distance from random to a perfect score that a run covers,
100 * (score - random) / (1 - random): %↑RAND rewards the same step more on
a task where random weights score low, gap closed weighs every task alike.

A group mean is shown only when the row has a number for every task of that
group in the table, so means over different task sets are never compared.
Where runs recorded different builds of one task folder (``task_fingerprints``
in scores.json, eval/driver/task_fingerprint.py), a section names the task and which
tags saw which build: those scores are not comparable.

``--mean NAME=A+B+...`` adds a row NAME, the mean of those runs on the tasks
they all scored: e.g. one model under several heareval predictor seeds
(python -m eval.driver.run --predictor-seed), usable as a reference in ``--random-for``.
A reference written ``A+B`` is the same kind of row, named ``A+B``, so the
numbers a run is compared with appear in the scores table.

``--noise-pair A=B`` names two runs of the same weights that should score
the same: two heareval predictor seeds, or a checkpoint and its fp16 copy.
heareval's score is one draw of its predictor, and an embedding that moves
by 2e-4 of its norm can move it by several points (docs/evaluation.md). The
largest |A - B| per task is printed as that task's noise, and the %↑RAND
table counts the tasks a run is above its reference by more than it: a rough
floor from one or a few pairs, not a confidence interval.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from pathlib import Path

from eval.driver.hear_tasks import BY_FOLDER, GROUPS

DRIVER_DIR = Path(__file__).resolve().parent
EVAL_DIR = DRIVER_DIR.parent
PAPER_FILE = DRIVER_DIR / "paper_scores.json"
GROUP_ORDER = (*GROUPS, "other")


class Row(dict):
    """task folder -> (mean, std | None); ``name`` and ``paper`` on the side."""

    def __init__(self, name: str, cells: dict[str, tuple[float | None, float | None]], paper: bool = False):
        super().__init__(cells)
        self.name, self.paper = name, paper


def load_runs(results_dir: Path) -> tuple[list[Row], dict[str, dict], list[dict]]:
    rows, tasks, runs = [], {}, []
    for path in sorted(results_dir.glob("*/scores.json")):
        data = json.loads(path.read_text())
        runs.append(data)
        cells = {}
        for folder, s in data["tasks"].items():
            tasks.setdefault(folder, s)
            cells[folder] = (s["mean"], s["std"])
        rows.append(Row(data["tag"], cells))
    return rows, tasks, runs


def seed_mean_row(name: str, members: list[Row]) -> Row:
    """The mean of several runs: random seeds as a reference (``a+b``), or one
    model under several predictor seeds (--mean). One random initialisation, or
    one draw of heareval's predictor, moves a task's score by several points, so
    a mean is harder to beat, or to win, by luck. Only tasks every member scored."""
    common = set.intersection(*(set(m) for m in members))
    return Row(name, {f: (statistics.fmean(m[f][0] for m in members), None) for f in common
                      if all(m[f][0] is not None for m in members)})


def mean_rows(rows: list[Row], specs: list[str], option: str = "--mean") -> list[Row]:
    """NAME=A+B: rows averaging runs (e.g. one model under several predictor seeds)."""
    by_name, out = {r.name: r for r in rows}, []
    for spec in specs:
        name, tags = spec.split("=", 1)
        missing = [t for t in tags.split("+") if t not in by_name]
        if missing or name in by_name:
            raise SystemExit(f"{option} {spec}: " + (f"no run tagged {', '.join(missing)}" if missing
                                                      else f"{name} is already a row"))
        by_name[name] = seed_mean_row(name, [by_name[t] for t in tags.split("+")])
        out.append(by_name[name])
    return out


def reference_means(rows: list[Row], random_tag: str, random_for: dict[str, str]) -> list[Row]:
    """Rows for references written A+B (the mean of random seeds), named so;
    the same rows as ``--mean A+B=A+B``. A missing --random-for reference is an
    error; a missing --random-tag only a note in the table."""
    names = {r.name for r in rows}
    out = mean_rows(rows, [f"{ref}={ref}" for ref in dict.fromkeys(random_for.values())
                           if "+" in ref and ref not in names], option="--random-for")
    parts = random_tag.split("+")
    if len(parts) > 1 and random_tag not in names | {r.name for r in out} and names.issuperset(parts):
        out += mean_rows(rows, [f"{random_tag}={random_tag}"], option="--random-tag")
    return out


def paper_rows(tasks: dict[str, dict]) -> list[Row]:
    """Paper rows restricted to the official HEAR tasks present in the table."""
    models = json.loads(PAPER_FILE.read_text())["models"]
    keyed = {folder: s.get("paper_key") for folder, s in tasks.items() if s.get("paper_key")}
    if not keyed:
        return []
    return [Row(model, {f: (scores[k], None) for f, k in keyed.items()}, paper=True)
            for model, scores in models.items()]


def ordered_columns(tasks: dict[str, dict]) -> dict[str, list[str]]:
    cols: dict[str, list[str]] = {}
    for g in GROUP_ORDER:
        in_group = sorted(f for f, s in tasks.items() if s["group"] == g)
        if in_group:
            cols[g] = in_group
    return cols


def group_mean(row: Row, folders: list[str]) -> float | None:
    values = [row.get(f, (None, None))[0] for f in folders]
    return None if any(v is None for v in values) else statistics.fmean(values)


def short(folder: str) -> str:
    return BY_FOLDER[folder].key if folder in BY_FOLDER else folder.split("-")[0]


def _fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def relative_gain(x: float | None, ref: float | None) -> float | None:
    """%↑RAND in percent; None where a score is missing or the reference is 0."""
    if x is None or ref is None or ref == 0:
        return None
    return 100 * (x - ref) / ref


def mean_gain(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """The mean %↑RAND over (score, reference) pairs that have one."""
    gains = [g for x, r in pairs if (g := relative_gain(x, r)) is not None]
    return statistics.fmean(gains) if gains else None


def gap_closed(x: float | None, ref: float | None) -> float | None:
    """Share (percent) of the random-to-perfect gap that x closes; None where a
    score is missing or the reference is already perfect. Scores are in [0, 1]."""
    if x is None or ref is None or ref >= 1:
        return None
    return 100 * (x - ref) / (1 - ref)


def mean_gap_closed(pairs: list[tuple[float | None, float | None]]) -> float | None:
    """The mean gap closed over (score, reference) pairs that have one."""
    gaps = [g for x, r in pairs if (g := gap_closed(x, r)) is not None]
    return statistics.fmean(gaps) if gaps else None


def _gain(x: float | None, ref: float | None) -> str:
    g = relative_gain(x, ref)
    return "—" if g is None else f"{g:+.1f}%"


def _beats(row: Row, ref: Row, folders: list[str]) -> list[str]:
    """How many tasks the row scores above the random reference on, and the
    means of its per-task relative gains and gaps closed (tasks scored by both)."""
    pairs = [(row.get(f, (None, None))[0], ref.get(f, (None, None))[0]) for f in folders]
    pairs = [(x, r) for x, r in pairs if x is not None and r is not None]
    above = sum(x > r for x, r in pairs)
    gain, gap = mean_gain(pairs), mean_gap_closed(pairs)
    return [f"{above}/{len(pairs)}", "—" if gain is None else f"{gain:+.1f}%", "—" if gap is None else f"{gap:+.1f}%"]


def noise_floor(rows: dict[str, Row], pairs: list[tuple[str, str]], folders: list[str]) -> dict[str, float]:
    """task folder -> the largest |A - B| over the pairs that scored it."""
    missing = sorted({t for pair in pairs for t in pair if t not in rows})
    if missing:
        raise SystemExit(f"no run tagged {', '.join(missing)} in the results")
    floor: dict[str, float] = {}
    for a, b in pairs:
        for f in folders:
            x, y = rows[a].get(f, (None, None))[0], rows[b].get(f, (None, None))[0]
            if x is not None and y is not None:
                floor[f] = max(floor.get(f, 0.0), abs(x - y))
    return floor


def _clearly_above(row: Row, ref: Row, folders: list[str], floor: dict[str, float]) -> str:
    """Tasks where the row beats its reference by more than the task's noise, of those with a noise figure."""
    pairs = [(row.get(f, (None, None))[0], ref.get(f, (None, None))[0], floor[f]) for f in folders if f in floor]
    pairs = [(x, r, n) for x, r, n in pairs if x is not None and r is not None]
    return f"{sum(x - r > n for x, r, n in pairs)}/{len(pairs)}"


def build_conflicts(runs: list[dict]) -> dict[str, dict[str, list[str]]]:
    """task folder -> {fingerprint: tags} for tasks scored on more than one build.
    Runs that recorded no fingerprint for a task are left out: unknown is not different."""
    seen: dict[str, dict[str, list[str]]] = {}
    for r in runs:
        for folder, fp in r.get("task_fingerprints", {}).items():
            if folder in r["tasks"]:
                seen.setdefault(folder, {}).setdefault(fp, []).append(r["tag"])
    return {f: by_fp for f, by_fp in seen.items() if len(by_fp) > 1}


def markdown(rows: list[Row], cols: dict[str, list[str]], runs: list[dict], random_tag: str,
             random_for: dict[str, str] | None = None, noise_pairs: list[tuple[str, str]] | None = None,
             command: str = "python -m eval.driver.leaderboard") -> str:
    """random_for: run tag -> the tag of its own random-weights reference (the
    same encoder with *its* normalisation), used instead of random_tag; an
    A+B reference is the row reference_means made.
    noise_pairs: (A, B) tags of the same weights scored twice (module docstring)."""
    random_for, noise_pairs = random_for or {}, noise_pairs or []
    flat = [f for fs in cols.values() for f in fs]
    head = ["model", *[f"{short(f)} ({g})" for g, fs in cols.items() for f in fs], *[f"**{g}**" for g in cols]]
    sep = ["---"] * len(head)

    def table(cells_of, extra: tuple[str, ...] = ()) -> list[str]:
        lines = ["| " + " | ".join([*head, *extra]) + " |", "| " + " | ".join(sep + ["---"] * len(extra)) + " |"]
        for row in rows:
            cells = cells_of(row)
            if cells is not None:
                lines.append("| " + " | ".join([row.name, *cells]) + " |")
        return lines

    out = ["# Leaderboard", "",
           "Test scores from heareval (primary metric per task; mean ± std over folds for k-fold tasks).",
           "Paper rows from `eval/driver/paper_scores.json`. Generated by:", "", "```bash", command, "```", "",
           "## Runs", "", "| tag | module | model | grid | grid points | tasks | run time (s) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        secs = sum(sum(t.values()) for t in r.get("timing_s", {}).values())
        model = Path(r["model"]).name if r.get("model") else "(module default)"
        out.append(f"| {r['tag']} | {r['module']} | {model} | {r['grid']} | {r['grid_points']} | "
                   f"{len(r['tasks'])} | {secs:.0f} |")
    conflicts = build_conflicts(runs)
    if conflicts:
        out += ["", "## Different builds of one task", "",
                "These tasks were scored on more than one build (the task folder's content fingerprint differs). "
                "Compare a task's scores only between tags that share a build.", ""]
        for folder, by_fp in sorted(conflicts.items()):
            out.append(f"- **{short(folder)}**: " + "; ".join(
                f"`{fp}`: {', '.join(sorted(tags))}" for fp, tags in sorted(by_fp.items())))
    out += ["", "## Scores", ""]
    out += table(lambda row: [_fmt(*row.get(f, (None, None))) for f in flat]
                 + [_fmt(group_mean(row, fs)) for fs in cols.values()])
    by_name = {r.name: r for r in rows if not r.paper}
    floor = noise_floor(by_name, noise_pairs, flat)
    if noise_pairs:
        out += ["", "## Noise: the same weights, scored twice", "",
                "|A - B| per task for two runs of one set of weights (another predictor seed, or the weights "
                "rounded to fp16). A difference of this size between two models is not evidence. "
                "The last row is the largest per task, the noise used below.", ""]
        out += ["| pair | " + " | ".join(short(f) for f in flat) + " |", "| --- " * (len(flat) + 1) + "|"]
        for a, b in noise_pairs:
            diffs = [(by_name[a].get(f, (None, None))[0], by_name[b].get(f, (None, None))[0]) for f in flat]
            out.append(f"| {a} vs {b} | " + " | ".join(
                "—" if x is None or y is None else f"{abs(x - y):.3f}" for x, y in diffs) + " |")
        out.append("| **largest** | " + " | ".join(f"{floor[f]:.3f}" if f in floor else "—" for f in flat) + " |")
    missing = sorted({t for t in random_for.values() if t not in by_name})  # a missing random_tag is a note below, not an error
    if missing:
        raise SystemExit(f"no run tagged {', '.join(missing)} in the results")
    refs = {random_tag, *random_for.values()}
    refs |= {part for tag in refs for part in tag.split("+")}
    ref = by_name.get(random_tag)
    out += ["", f"## %↑RAND (relative gain over `{random_tag}`" + (", or the run's own reference where named)" if random_for else ")"), ""]
    if ref is None and not random_for:
        out.append(f"No run tagged `{random_tag}` yet: run the random-weights model with `--tag {random_tag}`.")
    else:
        def gains(row: Row) -> list[str] | None:
            own = by_name[random_for[row.name]] if row.name in random_for else ref
            if row.paper or row.name in refs or own is None:
                return None
            cells = [_gain(row.get(f, (None, None))[0], own.get(f, (None, None))[0]) for f in flat]
            cells += [_gain(group_mean(row, fs), group_mean(own, fs)) for fs in cols.values()]
            return (cells + _beats(row, own, flat) + ([_clearly_above(row, own, flat, floor)] if floor else [])
                    + ([own.name] if random_for else []))

        out += table(gains, extra=("tasks above random", "mean per-task %↑RAND", "mean gap closed")
                     + (("above random by more than the noise",) if floor else ())
                     + (("random reference",) if random_for else ()))
    out += ["", "— : no score (task not run, or undefined, e.g. onset F-measure with no predicted events).", ""]
    return "\n".join(out)


def plot_groups(rows: list[Row], cols: dict[str, list[str]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for group, folders in cols.items():
        labels = [short(f) for f in folders] + ["mean"]
        shown = [r for r in rows if any(r.get(f, (None,))[0] is not None for f in folders)]
        if not shown:
            continue  # nothing to draw (e.g. every event score undefined)
        width = 0.8 / max(1, len(shown))
        fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(labels) * max(1, len(shown)) * 0.35, 3.6))
        for i, row in enumerate(shown):
            means = [row.get(f, (None, None))[0] for f in folders] + [group_mean(row, folders)]
            stds = [row.get(f, (None, None))[1] or 0.0 for f in folders] + [0.0]
            xs = [j + (i - (len(shown) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, [m if m is not None else math.nan for m in means], width, yerr=stds,
                   label=row.name, hatch="//" if row.paper else None, capsize=2)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        ax.set_ylabel("test score")
        ax.set_title(f"HEAR {group} tasks")
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / f"leaderboard_{group}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def command_line(argv: list[str] | None) -> str:
    """The command that regenerates this leaderboard, one option per line: the
    references and pairs chosen are part of what the tables mean."""
    lines = ["python -m eval.driver.leaderboard"]
    for i, a in enumerate(sys.argv[1:] if argv is None else argv):
        if a.startswith("--") or i == 0:
            lines.append(shlex.quote(a))
        else:
            lines[-1] += " " + shlex.quote(a)
    return " \\\n    ".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results-dir", type=Path, default=EVAL_DIR / "results")
    p.add_argument("--random-tag", default="random", help="run that %%↑RAND is relative to")
    p.add_argument("--random-for", action="append", default=[], metavar="RUN=RANDOM",
                   help="give RUN its own random reference (random weights with RUN's normalisation); repeatable. "
                        "RANDOM may be TAG+TAG...: the mean of several random seeds")
    p.add_argument("--noise-pair", action="append", default=[], metavar="A=B",
                   help="two runs of the same weights (two --predictor-seed values, or a checkpoint and its fp16 copy): "
                        "their per-task difference is shown as the noise; repeatable")
    p.add_argument("--mean", action="append", default=[], metavar="NAME=A+B",
                   help="add a row NAME, the per-task mean of runs A, B, ... (tasks all of them scored); repeatable")
    p.add_argument("--plot-rows", nargs="+", default=None, metavar="ROW",
                   help="draw only these rows (tags, --mean names, A+B references, paper rows) in the bar plots; "
                        "the tables keep every row (default: every row)")
    args = p.parse_args(argv)
    if any("=" not in m or not m.split("=", 1)[1] for m in args.mean):
        p.error("--mean takes NAME=TAG+TAG...")
    if any("=" not in m for m in args.random_for):
        p.error("--random-for takes RUN=RANDOM_TAG")
    if any("=" not in m for m in args.noise_pair):
        p.error("--noise-pair takes A=B")
    random_for = dict(m.split("=", 1) for m in args.random_for)
    noise_pairs = [tuple(m.split("=", 1)) for m in args.noise_pair]
    rows, tasks, runs = load_runs(args.results_dir)
    if not rows:
        sys.exit(f"no */scores.json under {args.results_dir}; run python -m eval.driver.run first")
    cols = ordered_columns(tasks)
    rows += mean_rows(rows, args.mean)
    rows += reference_means(rows, args.random_tag, random_for)
    rows += paper_rows(tasks)
    md = args.results_dir / "leaderboard.md"
    md.write_text(markdown(rows, cols, runs, args.random_tag, random_for, noise_pairs, command_line(argv)))
    plotted = rows
    if args.plot_rows:
        unknown = sorted(set(args.plot_rows) - {r.name for r in rows})
        if unknown:
            raise SystemExit(f"--plot-rows: no row named {', '.join(unknown)}")
        plotted = [r for r in rows if r.name in args.plot_rows]
    pngs = plot_groups(plotted, cols, args.results_dir)
    print("\n".join(map(str, [md, *pngs])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
