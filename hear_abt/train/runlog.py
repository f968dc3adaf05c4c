"""What a training run writes for people to read: log.csv (and TensorBoard
when installed) and the PNG plots of the loss, the online probe and the
cross-correlation matrix.

log.csv is rewritten on start so that it holds exactly the rows up to the
state the run continues from: a resumed run neither repeats nor loses a row.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

import torch

from .state import atomic_text

log = logging.getLogger(__name__)

LOG_FIELDS = ["step", "loss", "invariance", "redundancy", "lr_factor", "samples_per_s", "bad_steps", "wall_s"]


def complete_row(r: dict) -> bool:
    """False for a row cut short by a kill: a training row ends with wall_s, a
    probe-only row (step 0) with the probe's columns."""
    if None in r or None in r.values() or not (r.get("step") or "").isdigit():
        return False
    return r.get("wall_s") not in (None, "") or r.get("probe_mean") not in (None, "")


class RunLog:
    """CSV (+ TensorBoard when installed) on the main process; PNG plots.

    extra_fields: the probe's columns (probe_<task>..., probe_mean, probe_s);
    rows without a probe value leave them empty, as rows of a probe-only
    step (step 0) leave the loss columns empty."""

    def __init__(self, run_dir: Path, start_step: int, extra_fields: list[str] | None = None):
        self.run_dir, self.path = run_dir, run_dir / "log.csv"
        self.fields = LOG_FIELDS + list(extra_fields or [])
        rows = []
        if self.path.exists():  # drop rows logged after the state we resume from, and any cut short by a kill
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if complete_row(r) and int(r["step"]) <= start_step]
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, self.fields, extrasaction="ignore")  # columns of an earlier probe are dropped
        w.writeheader()
        w.writerows(rows)
        atomic_text(self.path, text.getvalue())
        self.history = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
        self.probe_cols = [c for c in self.fields if c.startswith("probe_") and c != "probe_s"]
        self.probe_history = [(int(r["step"]), {c: float(r[c]) for c in self.probe_cols})
                              for r in rows if all(r.get(c) for c in self.probe_cols) and self.probe_cols]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        except ImportError:
            self.tb = None

    def row(self, values: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: values.get(k, "") for k in self.fields})
        if "loss" in values and math.isfinite(values["loss"]):
            self.history.append((values["step"], values["loss"]))
        if self.probe_cols and "probe_mean" in values:
            self.probe_history.append((values["step"], {c: values[c] for c in self.probe_cols}))
        if self.tb is not None:
            for k in ("loss", "invariance", "redundancy", "lr_factor", "samples_per_s", *self.probe_cols):
                if k in values:
                    self.tb.add_scalar(f"{'probe' if k.startswith('probe_') else 'train'}/{k}", values[k], values["step"])

    def plots(self, c: torch.Tensor | None, step: int) -> None:
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            log.warning("matplotlib is not installed: no plots (pip install matplotlib)")
            return
        out = self.run_dir / "plots"
        out.mkdir(exist_ok=True)
        if self.history or self.probe_history:
            self._plot_curves(Figure, FigureCanvasAgg, out / "loss.png", step)
        if c is not None:
            fig = Figure(figsize=(5, 4.5))
            ax = fig.add_subplot()
            k = min(128, c.shape[0])
            im = ax.imshow(c[:k, :k].float().cpu().numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
            fig.colorbar(im)
            ax.set_title(f"cross-correlation C[:{k}, :{k}], step {step}", fontsize=10)
            FigureCanvasAgg(fig).print_png(str(out / "xcorr.png"))

    def _plot_curves(self, Figure, FigureCanvasAgg, path: Path, step: int) -> None:  # noqa: N803 (classes)
        """The loss, and beside it the probe's accuracy."""
        fig = Figure(figsize=(11 if self.probe_history else 6, 4))
        ax = fig.add_subplot(1, 2 if self.probe_history else 1, 1)
        if self.history:
            s, l = zip(*self.history)
            ax.plot(s, l)
        ax.set(xlabel="step", ylabel="Barlow Twins loss", title=f"loss to step {step}")
        ax.grid(alpha=0.3)
        if self.probe_history:
            ax = fig.add_subplot(1, 2, 2)
            s = [h[0] for h in self.probe_history]
            for col in self.probe_cols:
                ax.plot(s, [h[1][col] for h in self.probe_history], marker=".",
                        lw=2.5 if col == "probe_mean" else 1, label=col[len("probe_"):])
            ax.set(xlabel="step", ylabel="probe accuracy (test)", title="online linear probe")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        FigureCanvasAgg(fig).print_png(str(path))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
