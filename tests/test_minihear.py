"""The mini-HEAR suite: heareval's folder format, determinism, corpus disjointness."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval.minihear.registry import TASKS, small_tasks

# Score names heareval 2021.1.3 knows (heareval/score.py available_scores).
HEAREVAL_SCORES = {"top1_acc", "pitch_acc", "chroma_acc", "event_onset_200ms_fms", "event_onset_50ms_fms",
                   "event_onset_offset_50ms_20perc_fms", "segment_1s_er", "mAP", "d_prime", "aucroc"}


def _task_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir())


def test_suite_covers_hear_groups(minihear_small: Path) -> None:
    dirs = _task_dirs(minihear_small)
    assert [d.name for d in dirs] == sorted(TASKS[n].folder for n in small_tasks())
    assert len(small_tasks()) < len(TASKS)  # the heavy tasks have no --small build
    # heareval's `--task all` treats every entry of the tasks folder as a task.
    assert all(d.is_dir() and (d / "task_metadata.json").is_file() for d in dirs)
    mds = [json.loads((d / "task_metadata.json").read_text()) for d in dirs]
    assert {m["embedding_type"] for m in mds} == {"scene", "event"}
    assert {m["prediction_type"] for m in mds} == {"multiclass", "multilabel"}
    assert any(m["split_mode"] == "new_split_kfold" and len(m["splits"]) == 5 for m in mds)
    assert any(m["evaluation"][0] == "mAP" for m in mds)


@pytest.mark.parametrize("name", small_tasks())
def test_task_folder_matches_heareval(minihear_small: Path, name: str) -> None:
    d = minihear_small / TASKS[name].folder
    md = json.loads((d / "task_metadata.json").read_text())
    for key in ("task_name", "version", "embedding_type", "prediction_type", "split_mode", "splits",
                "sample_duration", "evaluation"):
        assert key in md, key
    assert d.name == f"{md['task_name']}-v1.0-full"
    from eval.driver.hear_tasks import task_group

    # the leaderboard files every task under its group, real-audio tasks included
    assert md["mirrors_group"] == TASKS[name].group
    assert task_group(d.name, md) == {"environment": "env"}.get(TASKS[name].group, TASKS[name].group)
    assert md["embedding_type"] in {"scene", "event"}
    assert md["prediction_type"] in {"multiclass", "multilabel"}
    assert set(md["evaluation"]) <= HEAREVAL_SCORES
    if md["split_mode"] == "trainvaltest":
        assert sorted(md["splits"]) == ["test", "train", "valid"]
    else:
        assert md["split_mode"] == "new_split_kfold" and md["nfolds"] == len(md["splits"])
    if md["embedding_type"] == "event":
        assert md["evaluation_params"]["event_postprocessing_grid"]

    with open(d / "labelvocabulary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["idx"]) for r in rows] == list(range(len(rows)))
    vocab = {r["label"] for r in rows}
    assert len(vocab) == len(rows) >= 2

    n = int(round(md["sample_duration"] * 16000))
    seen: set[str] = set()
    for split in md["splits"]:
        data = json.loads((d / f"{split}.json").read_text())
        assert data, f"{split} is empty"
        wavs = {p.name for p in (d / "16000" / split).glob("*.wav")}
        assert set(data) == wavs
        assert not seen & set(data), "file names must be unique across splits"
        seen |= set(data)
        for target in data.values():
            if md["embedding_type"] == "scene":
                assert isinstance(target, list) and target and set(target) <= vocab
            else:
                for e in target:
                    assert set(e) == {"label", "start", "end"} and e["label"] in vocab
                    assert 0 <= e["start"] < e["end"] <= 1000 * md["sample_duration"]  # milliseconds
        for name in sorted(data)[:5]:
            info = sf.info(str(d / "16000" / split / name))
            assert (info.samplerate, info.channels, info.frames) == (16000, 1, n)
            x, _ = sf.read(str(d / "16000" / split / name), dtype="float32")
            assert np.abs(x).max() > 1e-3, "silent clip"


def _hash_task(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_build_is_deterministic(tmp_path: Path) -> None:
    from eval.minihear.build import build_tasks

    names = ["mini_esc50", "mini_libricount"]
    for run in ("a", "b"):
        build_tasks(tmp_path / run, seed=0, small=True, names=names, n_proc=2)
    build_tasks(tmp_path / "c", seed=1, small=True, names=["mini_esc50"], n_proc=1)
    for name in names:
        a, b = _hash_task(tmp_path / "a" / f"{name}-v1.0-full"), _hash_task(tmp_path / "b" / f"{name}-v1.0-full")
        assert a == b
    a, c = _hash_task(tmp_path / "a" / "mini_esc50-v1.0-full"), _hash_task(tmp_path / "c" / "mini_esc50-v1.0-full")
    assert a["fold00.json"] != c["fold00.json"]


def test_test_splits_use_held_out_items(minihear_small: Path) -> None:
    from eval.minihear import real
    from eval.minihear.sources import holdout_role

    by_id = {s.id: s for p in real.PACKAGES if real.debs.package_root(p) for s in real.sources(p, fetch=False)}
    n_real = 0

    for d in _task_dirs(minihear_small):
        md = json.loads((d / "task_metadata.json").read_text())
        if md["split_mode"] != "trainvaltest":
            continue
        prov = json.loads((d / "provenance.json").read_text())
        for split in ("train", "valid", "test"):
            for ids in prov[split].values():
                for i in ids:
                    if i.startswith(("voice:", "inst:", "drum:")):
                        # test items only in test; train/valid never borrow a test item
                        assert (holdout_role(i) == "test") == (split == "test"), (d.name, split, i)
                    elif i.startswith("real:"):
                        # real recordings: test sources are exactly those the corpus may never take
                        assert real.reserved_for_tasks(by_id[i]) == (split == "test"), (d.name, split, i)
                        n_real += 1
    assert n_real > 0


def test_corpus_is_disjoint_from_test_splits(tmp_path: Path, minihear_small: Path) -> None:
    from eval.corpus.synthetic import build_corpus

    n = build_corpus(tmp_path / "corpus", hours=0.02, seed=0, n_proc=2)
    wavs = sorted((tmp_path / "corpus").glob("*.wav"))
    assert len(wavs) == n >= 7
    with open(tmp_path / "corpus" / "manifest.csv") as f:
        used = {s for row in csv.DictReader(f) for s in row["sources"].split(";") if s}
    assert used
    test_ids: set[str] = set()
    for d in _task_dirs(minihear_small):
        md = json.loads((d / "task_metadata.json").read_text())
        prov = json.loads((d / "provenance.json").read_text())
        for split in (["test"] if md["split_mode"] == "trainvaltest" else md["splits"]):
            for ids in prov[split].values():
                test_ids.update(ids)
    assert test_ids and not used & test_ids
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels) == (16000, 1)


def test_onset_f_measure() -> None:
    from eval.minihear.baseline import onset_f

    ref = {"a.wav": [{"label": "x", "start": 1000.0, "end": 1200.0}, {"label": "y", "start": 3000.0, "end": 3100.0}]}
    assert onset_f(ref, ref) == 1.0
    near = {"a.wav": [{"label": "x", "start": 1150.0}, {"label": "y", "start": 3300.0}]}
    assert onset_f(ref, near) == pytest.approx(0.5)
    assert onset_f(ref, {"a.wav": []}) == 0.0


def test_onset_f_matches_sed_eval() -> None:
    import dcase_util
    import sed_eval

    from eval.minihear.baseline import onset_f

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    ref = {f"{i}.wav": [{"label": str(rng.choice(labels)), "start": float(t), "end": float(t) + 300}
                        for t in np.sort(rng.uniform(0, 9000, 5))] for i in range(6)}
    est = {f: [{"label": e["label"] if rng.random() > 0.2 else "a", "start": e["start"] + rng.normal(0, 150),
                "end": e["end"]} for e in evs if rng.random() > 0.2] for f, evs in ref.items()}

    def cont(x):
        return dcase_util.containers.MetaDataContainer(
            [{"event_label": e["label"], "event_onset": e["start"] / 1000, "event_offset": e["end"] / 1000, "file": f}
             for f, evs in x.items() for e in evs])

    m = sed_eval.sound_event.EventBasedMetrics(event_label_list=labels, evaluate_onset=True,
                                               evaluate_offset=False, t_collar=0.2)
    r, e = cont(ref), cont(est)
    for f in ref:
        m.evaluate(reference_event_list=r.filter(filename=f), estimated_event_list=e.filter(filename=f))
    assert onset_f(ref, est) == pytest.approx(m.results_overall_metrics()["f_measure"]["f_measure"])


def test_cards_and_baseline(tmp_path: Path) -> None:
    from eval.minihear.build import main

    out = tmp_path / "tasks"
    assert main(["--out", str(out), "--small", "--tasks", "mini_drum_stroke,mini_dcase2016_task2",
                 "--cards-md", str(tmp_path / "CARDS.md")]) == 0
    text = (out / "mini_drum_stroke-v1.0-full" / "README.md").read_text()
    assert "Mridangam" in text and "chance" in text and "log-mel baseline" in text
    assert "mini_dcase2016_task2" in (tmp_path / "CARDS.md").read_text()
