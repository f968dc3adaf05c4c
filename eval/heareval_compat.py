"""Run heareval's predictions runner with one targeted fix for Lightning >= 1.6.

Usage (the driver does this; heareval's runner options pass through)::

    python eval/heareval_compat.py predictions EMBEDDINGS_TASK_DIR --grid fast
    python eval/heareval_compat.py embeddings MODULE --tasks-dir ... (GPU runs)

Why a launcher and not a copy of heareval: the bug is one line in heareval
2021.1.3 that relied on a Lightning setter which no longer exists.

The cause of ``KeyError: 50`` on event tasks. heareval picks event
post-processing (median filter, minimum duration) on validation and stores the
best choice per epoch, keyed by ``current_epoch`` during validation. At test
time it reads the entry for ``current_epoch`` again; to point that at the best
checkpoint's epoch, ``task_predictions_test`` does
``trainer.fit_loop.current_epoch = grid_point.epoch``. In pytorch-lightning
<= 1.5 ``FitLoop.current_epoch`` was a property whose setter wrote
``epoch_progress.current.completed``, which ``trainer.current_epoch`` reads.
Lightning 1.6 removed that property, so the assignment now just creates an
unused attribute, and the test step looks up the number of epochs trained
(50 after ``max_epochs=50``; always one past the last validation epoch), which
was never a key. Scene tasks never read the table, so only events fail.

Why patch rather than pin Lightning 1.5: 1.5 pins setuptools==59.5 and
predates torch 2 (it imports ``torch._six``), so it does not run with the
torch this project needs. The fix wraps ``task_predictions_test`` and does
what heareval's assignment meant: set the epoch counter that
``trainer.current_epoch`` reads to the best checkpoint's epoch before testing.
It changes nothing for scene tasks or for Lightning versions that still have
the setter (the value written is the same).

``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set for this process only:
heareval ``torch.load``s the Lightning checkpoint it just wrote, which holds
non-tensor objects, and torch >= 2.6 loads weights-only by default.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

_PATCHED = "_hear_abt_best_epoch_fix"


def _best_epoch_test(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        grid_point = kwargs["grid_point"] if "grid_point" in kwargs else args[1]
        progress = grid_point.trainer.fit_loop.epoch_progress.current
        progress.completed = grid_point.epoch  # what trainer.current_epoch reads
        return original(*args, **kwargs)

    setattr(wrapper, _PATCHED, True)
    return wrapper


def apply() -> None:
    """Install the fix into heareval's predictions module (idempotent)."""
    from heareval.predictions import task_predictions as tp

    if not getattr(tp.task_predictions_test, _PATCHED, False):
        tp.task_predictions_test = _best_epoch_test(tp.task_predictions_test)


def _import_embeddings_runner():
    """heareval's embeddings runner, importable on a GPU with tensorflow-cpu.

    At import it raises "GPUs not available in tensorflow, but found by
    pytorch" whenever torch sees a GPU that TensorFlow does not (always, with
    tensorflow-cpu). The check protects TensorFlow HEAR modules from silently
    running on CPU; a torch module runs on the GPU regardless. So, only for
    that import, TensorFlow's answer is replaced by torch's. Use it for torch
    modules; a TensorFlow module needs a GPU tensorflow instead.
    """
    import tensorflow as tf
    import torch

    original = tf.test.is_gpu_available
    tf.test.is_gpu_available = lambda *a, **k: torch.cuda.is_available()
    try:
        from heareval.embeddings import runner
    finally:
        tf.test.is_gpu_available = original
    return runner


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    which = argv.pop(0) if argv else ""
    if which == "predictions":
        os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        apply()
        from heareval.predictions import runner
    elif which == "embeddings":
        runner = _import_embeddings_runner()
    else:
        sys.exit("usage: heareval_compat.py {predictions|embeddings} [heareval runner args]")
    runner.runner.main(args=argv, prog_name=f"python -m heareval.{which}.runner")


if __name__ == "__main__":
    main()
