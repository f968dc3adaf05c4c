"""The mini-HEAR onset F-measure (eval/minihear/baseline.py) equals sed_eval's.

heareval scores event tasks with sed_eval's EventBasedMetrics (onset only,
200 ms collar, 'optimal' matching), so the baseline and chance figures that
the mini-HEAR cards print beside heareval's must use the same rule. Greedy
matching, used before, differed from it in 3 of 40 random seeds.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from eval.minihear import baseline
from eval.minihear.baseline import onset_f


def sed_eval_onset_f(ref: dict[str, list[dict]], est: dict[str, list[dict]]) -> float:
    import dcase_util
    import sed_eval

    def container(x: dict[str, list[dict]], f: str):
        return dcase_util.containers.MetaDataContainer(
            [{"event_label": e["label"], "event_onset": e["start"] / 1000,
              "event_offset": e.get("end", e["start"] + 100) / 1000, "file": f} for e in x.get(f, [])])

    labels = sorted({e["label"] for x in (ref, est) for evs in x.values() for e in evs})
    m = sed_eval.sound_event.EventBasedMetrics(event_label_list=labels, evaluate_onset=True,
                                               evaluate_offset=False, t_collar=0.2)
    for f in ref:
        m.evaluate(reference_event_list=container(ref, f), estimated_event_list=container(est, f))
    value = m.results_overall_metrics()["f_measure"]["f_measure"]
    return 0.0 if np.isnan(value) else float(value)


def test_greedy_would_miss_a_match_that_optimal_matching_finds():
    """est at 150 ms is nearest to ref 200 but is the only one within 200 ms of
    ref 0; the est at 390 ms can only match ref 200. Greedy (nearest first)
    matched 1 pair, the maximum matching has 2: F = 2*2/(2+2) = 1."""
    ref = {"a.wav": [{"label": "x", "start": 0.0}, {"label": "x", "start": 200.0}]}
    est = {"a.wav": [{"label": "x", "start": 150.0}, {"label": "x", "start": 390.0}]}
    assert onset_f(ref, est) == 1.0 == sed_eval_onset_f(ref, est)


def test_labels_collar_and_empty_files():
    ref = {"a.wav": [{"label": "x", "start": 1000.0}, {"label": "y", "start": 3000.0}], "b.wav": []}
    assert onset_f(ref, ref) == 1.0
    assert onset_f(ref, {"a.wav": [{"label": "y", "start": 1000.0}]}) == 0.0  # wrong label
    assert onset_f(ref, {"a.wav": [{"label": "x", "start": 1200.0}]}) == pytest.approx(2 / 3)  # at the collar
    assert onset_f(ref, {"a.wav": [{"label": "x", "start": 1201.0}]}) == 0.0  # past it
    assert onset_f(ref, {"b.wav": [{"label": "x", "start": 1000.0}]}) == 0.0  # estimates in the wrong file
    assert onset_f(ref, {}) == 0.0


@pytest.mark.parametrize("seed", range(40))
def test_equals_sed_eval_on_random_event_lists(seed):
    """Dense events with overlapping collars, where greedy and optimal differ."""
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c"]
    ref = {f"{i}.wav": [{"label": str(rng.choice(labels)), "start": float(t), "end": float(t) + 300}
                        for t in np.sort(rng.uniform(0, 3000, int(rng.integers(0, 8))))] for i in range(5)}
    est = {f: [{"label": e["label"] if rng.random() > 0.2 else "a", "start": e["start"] + rng.normal(0, 150),
                "end": e["end"]} for e in evs if rng.random() > 0.2]
           + [{"label": "b", "start": float(rng.uniform(0, 3000))} for _ in range(int(rng.integers(0, 3)))]
           for f, evs in ref.items()}
    assert onset_f(ref, est) == pytest.approx(sed_eval_onset_f(ref, est), abs=1e-12)


def test_equals_sed_eval_on_the_mini_dcase_task(tmp_path, monkeypatch):
    """Real annotations and real predictions: the log-mel baseline's detections
    and its 20 chance draws on the small mini_dcase2016_task2 test split."""
    from eval.minihear.build import build_tasks
    from eval.minihear.registry import TASKS

    task = TASKS["mini_dcase2016_task2"]
    build_tasks(tmp_path, seed=0, small=True, names=[task.name], n_proc=1)
    calls = []
    monkeypatch.setattr(baseline, "onset_f", lambda ref, est: calls.append((ref, est)) or onset_f(ref, est))
    baseline.score(task, tmp_path / task.folder)
    assert len(calls) == 21
    ref = json.loads((tmp_path / task.folder / "test.json").read_text())
    assert calls[0][0] == ref and sum(map(len, ref.values())) >= 10
    for r, e in calls:
        assert onset_f(r, e) == pytest.approx(sed_eval_onset_f(r, e), abs=1e-12)
    assert onset_f(*calls[0]) > 0
