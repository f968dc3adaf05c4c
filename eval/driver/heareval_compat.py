"""Launch heareval's runners with the fixes they need on current libraries.

Usage (the driver does this; heareval's runner options pass through)::

    python -m eval.driver.heareval_compat predictions EMBEDDINGS_TASK_DIR --grid fast
    python -m eval.driver.heareval_compat predictions --predictor-seed 1 EMBEDDINGS_TASK_DIR --grid fast
    python -m eval.driver.heareval_compat embeddings MODULE --tasks-dir ... (GPU runs)

Why a launcher and not a copy of heareval: each fix is a few lines around one
heareval function, applied in this process only; heareval stays as shipped.

The cause of ``KeyError: 50`` on event tasks (pytorch-lightning 1.9). heareval
picks event post-processing (median filter, minimum duration) on validation
and stores the best choice per epoch, keyed by ``current_epoch``. At test time
it reads the entry for ``current_epoch`` again, expecting the epoch of the best
checkpoint. With Lightning 1.6-1.8 that held because ``trainer.test(ckpt_path=)``
restored the epoch counter (``fit_loop.epoch_progress.current.completed``)
from the checkpoint's ``"epoch"``; Lightning 1.9 restores only the test loop,
so the counter stays at the number of epochs trained (50 after
``max_epochs=50``; always one past the last validation epoch), which is never
a key. heareval's own guard, ``trainer.fit_loop.current_epoch = grid_point.epoch``
in ``task_predictions_test``, is a no-op since Lightning 1.6 removed that
setter. Scene tasks never read the table, so only event tasks fail.

The fix wraps ``task_predictions_test`` to set that counter to the best
checkpoint's epoch before testing, i.e. what Lightning 1.6-1.8 did and what
heareval's guard meant. Checked on a tiny event task: Lightning 1.8.6 with
heareval unpatched and Lightning 1.9.5 with this fix give identical test
scores and losses. Why not pin 1.8.6 instead (it installs on Python 3.11 and
works here): 1.9.5 is the newest 1.x release (1.8.6 predates torch 2.0),
heareval needs 1.x (it uses ``validation_epoch_end``), and the project's
shared environment already runs 1.9.5. Lightning 1.5 is no way out either:
heareval requires >= 1.6, and here 1.5.10 failed with a KeyError one step
earlier (after training).

``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set for the predictions process
only: heareval ``torch.load``s the Lightning checkpoint it just wrote, which
holds non-tensor objects, and torch >= 2.6 loads weights-only by default.

``--predictor-seed N`` (predictions only) replaces heareval's fixed seed 42,
which decides the grid points tried, the MLP's initialisation and the batch
order. One seed is one draw: another seed, or the weights rounded to fp16,
moved a mini-HEAR task's score by up to .16 (docs/evaluation.md), so a
comparison between models wants the mean over several seeds.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

_PATCHED = "_hear_abt_best_epoch_fix"
# Lightning's seed_everything swaps a seed outside [0, 2**32 - 1] for a random one with only a
# warning, so such a seed would be recorded but not used: it is refused instead.
MAX_SEED = 2**32 - 1
_ORIGINAL_SEEDER = "_hear_abt_original_seed_everything"


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


def seed_predictions(seed: int) -> None:
    """Make heareval's predictions seed everything with ``seed`` instead of its 42."""
    from heareval.predictions import task_predictions as tp

    original = getattr(tp.seed_everything, _ORIGINAL_SEEDER, tp.seed_everything)

    def seeded(_ignored: int | None = None, workers: bool = False) -> int:
        return original(seed, workers=workers)

    setattr(seeded, _ORIGINAL_SEEDER, original)
    tp.seed_everything = seeded


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
        if argv[:1] == ["--predictor-seed"]:
            if len(argv) < 2 or not (argv[1].isdigit() and int(argv[1]) <= MAX_SEED):
                sys.exit(f"--predictor-seed takes an integer from 0 to {MAX_SEED}")
            seed_predictions(int(argv[1]))
            argv = argv[2:]
        from heareval.predictions import runner
    elif which == "embeddings":
        runner = _import_embeddings_runner()
    else:
        sys.exit("usage: python -m eval.driver.heareval_compat {predictions|embeddings} [heareval runner args]")
    runner.runner.main(args=argv, prog_name=f"python -m heareval.{which}.runner")


if __name__ == "__main__":
    main()
