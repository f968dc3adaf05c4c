"""The quality probe: standalone on checkpoints, and online in the training
loop without changing what training computes."""
import csv
import json
import shutil

import pytest
import torch
from helpers import make_event_task, make_scene_task

from hear_abt.train import loop, probe
from hear_abt.train.config import TrainConfig


@pytest.fixture(scope="module")
def tiny_tasks(tmp_path_factory):
    """tiny_scene (3-fold), the same clips as a train/valid/test task, and
    tiny_event (an event task the probe must skip)."""
    root = tmp_path_factory.mktemp("probe_tasks")
    scene, event = make_scene_task(root), make_event_task(root)
    tvt = root / "tiny_tvt-v1.0-full"
    shutil.copytree(scene, tvt)
    meta = json.loads((tvt / "task_metadata.json").read_text())
    meta.update(task_name="tiny_tvt", split_mode="trainvaltest", splits=["train", "valid", "test"])
    (tvt / "task_metadata.json").write_text(json.dumps(meta))
    for fold, split in zip(("fold00", "fold01", "fold02"), ("train", "valid", "test")):
        (tvt / f"{fold}.json").rename(tvt / f"{split}.json")
        for sr in ("16000", "44100"):
            (tvt / sr / fold).rename(tvt / sr / split)
    return {"scene": scene, "tvt": tvt, "event": event}


def test_standalone_table_and_skips(tiny_tasks, rand_ckpt, tmp_path, capsys, caplog):
    out = tmp_path / "scores.json"
    rows = probe.main(["--model", str(rand_ckpt), "--tasks", str(tiny_tasks["scene"]), str(tiny_tasks["tvt"]),
                       str(tiny_tasks["event"]), "--json", str(out)])
    table = capsys.readouterr().out
    assert "| model | tiny_scene | tiny_tvt | mean |" in table and "chance (majority class) | 0.333 | 0.333" in table
    assert "skipping tiny_event: event task" in caplog.text
    s = rows[str(rand_ckpt)]
    assert json.loads(out.read_text()) == rows
    # Three pitches in noise: linearly separable even for random weights (chance 1/3).
    assert s["tiny_scene"] >= 0.8 and s["tiny_tvt"] >= 0.8
    assert s["mean"] == pytest.approx((s["tiny_scene"] + s["tiny_tvt"]) / 2)


def test_standalone_errors(tiny_tasks, rand_ckpt, tmp_path):
    with pytest.raises(SystemExit, match="no task_metadata.json"):
        probe.main(["--model", str(rand_ckpt), "--tasks", str(tmp_path)])
    with pytest.raises(SystemExit, match="none of .* is a multiclass scene task"):
        probe.main(["--model", str(rand_ckpt), "--tasks", str(tiny_tasks["event"])])
    with pytest.raises(SystemExit, match="no such file"):
        probe.main(["--model", str(tmp_path / "missing.pt"), "--tasks", str(tiny_tasks["scene"])])


def test_fit_predict_separates_classes_and_ignores_constant_features():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (120,), generator=g)
    x = torch.randn(120, 100, generator=g, dtype=torch.float64)  # more dimensions than clips: the SVD path
    x[:, :4] += 6.0 * torch.nn.functional.one_hot(y, 4)  # class k shifted along axis k
    x[:, 7] = 3.0  # a constant feature must not give NaN
    acc = (probe.fit_predict(x[:80], y[:80], x[80:], 4) == y[80:]).double().mean()
    assert acc >= 0.75  # chance 0.25; measured 0.93 (seeds 1-3: 0.82-0.88; sklearn's probe gives the same predictions)
    shuffled = probe.fit_predict(x[:80], y[:80][torch.randperm(80, generator=g)], x[80:], 4)
    assert (shuffled == y[80:]).double().mean() <= 0.5  # measured 0.33


def test_probe_leaves_the_encoder_as_it_was(tiny_tasks):
    """Train/eval flags, BatchNorm buffers, weights and the global RNG."""
    from hear_abt.encoders import build_encoder
    from hear_abt.frontend import MelConfig

    enc = build_encoder("audiontt").train()
    enc.features[1].eval()  # a mixed state must come back as it was
    flags = [m.training for m in enc.modules()]
    sd = {k: v.clone() for k, v in enc.state_dict().items()}
    p = probe.OnlineProbe([tiny_tasks["scene"]], enc, "audiontt", {}, MelConfig(), (-8.0, 4.0))
    assert p.columns == ["probe_tiny_scene", "probe_mean"]
    rng = torch.get_rng_state()
    scores = p()
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in enc.modules()] == flags
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in sd.items())
    assert 0 <= scores["probe_tiny_scene"] <= 1 and scores["probe_s"] > 0


def _rows(run_dir):
    with open(f"{run_dir}/log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_online_probe_changes_nothing_and_resumes_exactly(tiny_config, tiny_tasks, tmp_path):
    """4 steps without the probe == 2 steps with it, stop, resume with it, 2
    more: bitwise equal weights, optimiser and bank. log.csv holds the probe
    columns at steps 0, 2 (probe_every) and 4 (the end), empty elsewhere."""
    plain = tiny_config(run_dir=str(tmp_path / "plain"), ckpt_every=0)
    loop.train(plain)
    probed = tiny_config(run_dir=str(tmp_path / "probed"), ckpt_every=0, plot_every=4,
                         probe_tasks=[str(tiny_tasks["scene"]), str(tiny_tasks["event"])], probe_every=2)
    loop.train(probed, stop_at=2)
    loop.train(probed, resume=True)
    a = torch.load(loop.state_path(plain.run_dir), weights_only=True)
    b = torch.load(loop.state_path(probed.run_dir), weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"] and a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][k]["mu"], b["optimizer"]["state"][k]["mu"]), k
    assert torch.equal(a["mixup"]["bank"], b["mixup"]["bank"])

    rows = _rows(probed.run_dir)
    assert list(rows[0]) == loop.LOG_FIELDS + ["probe_tiny_scene", "probe_mean", "probe_s"]
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4"]
    with_probe = [r["step"] for r in rows if r["probe_mean"]]
    assert with_probe == ["0", "2", "4"]
    assert rows[0]["loss"] == "" and all(r["loss"] for r in rows[1:])
    for r in rows:
        if r["probe_mean"]:
            assert 0 <= float(r["probe_tiny_scene"]) <= 1 and float(r["probe_mean"]) == float(r["probe_tiny_scene"])
        else:
            assert r["probe_tiny_scene"] == r["probe_s"] == ""
    assert [r["loss"] for r in _rows(plain.run_dir)] == [r["loss"] for r in rows[1:]]
    assert (tmp_path / "probed" / "plots" / "loss.png").is_file()
    # The online probe is the standalone one on the exported encoder (same HEAR path, same norm stats).
    import hear_abt

    again = probe.probe_model(hear_abt.load_model(str(tmp_path / "probed" / "encoder.pt")), probe.load_tasks([tiny_tasks["scene"]]))
    assert round(again["tiny_scene"], 4) == float(rows[-1]["probe_tiny_scene"])


def test_probe_config_parsing(tmp_path):
    from hear_abt.train.__main__ import main

    cfg = TrainConfig().replace({"probe_tasks": "a,b", "probe_every": 50})
    assert cfg.probe_tasks == ["a", "b"] and cfg.probe_every == 50
    assert TrainConfig().replace({"probe_tasks": ["a"]}).probe_tasks == ["a"]
    with pytest.raises(ValueError, match="probe_every must be >= 0"):
        TrainConfig(probe_every=-1)
    with pytest.raises(SystemExit, match="probe_tasks must be a list"):
        main(["--set", "probe_tasks=[1, 2]", "--print-config"])
    # Changing the probe on resume is allowed: it does not change training.
    assert {"probe_tasks", "probe_every"} <= loop.RESUMABLE_OVERRIDES


# ---------------------------------------------------------------- eval/probes/layer_probe.py

def _layer_probe():
    from eval.probes import layer_probe

    return layer_probe


def test_layer_readouts_rebuild_the_scene_embedding(model, example_wav):
    """The readouts are the stages the HEAR embedding is made of: conv2 + fc2,
    pooled, is get_scene_embeddings' output (through the training graph, so
    up to float rounding), and each stage has its documented width."""
    import hear_abt

    audio = example_wav[None]
    feats = _layer_probe().readout_features(model, audio)
    assert {k: v.shape for k, v in feats.items()} == {
        "logmel": (1, 64), "conv1": (1, 2048), "conv2": (1, 1024), "fc1": (1, 2048), "fc2": (1, 2048),
        "embedding": (1, 3072), "conv2+fc1": (1, 3072)}
    api = hear_abt.get_scene_embeddings(audio, model).double()
    assert torch.allclose(feats["embedding"], api, rtol=1e-4, atol=1e-4 * api.abs().max().item())
    assert not torch.allclose(feats["fc1"], feats["fc2"])  # a wrong slice of the MLP would repeat a stage


def test_layer_probe_table_and_errors(tiny_tasks, rand_ckpt, tmp_path, capsys):
    lp = _layer_probe()
    out = tmp_path / "layers.json"
    res = lp.main(["--model", str(rand_ckpt), "--tasks", str(tiny_tasks["scene"]), str(tiny_tasks["tvt"]),
                   "--json", str(out)])
    table = capsys.readouterr().out
    rows = res[str(rand_ckpt)]
    assert list(rows) == list(lp.READOUTS) and json.loads(out.read_text()) == res
    assert all(f"| {rand_ckpt} | {r} |" in table for r in lp.READOUTS)
    # Three pitches in noise: the log-mel input separates them (chance 1/3), and the
    # "embedding" readout scores what the standalone probe does on the API's embedding,
    # within one test clip (the two paths differ only in float rounding).
    assert rows["logmel"]["tiny_scene"] >= 0.8
    api = probe.main(["--model", str(rand_ckpt), "--tasks", str(tiny_tasks["tvt"])])[str(rand_ckpt)]["tiny_tvt"]
    n_test = len(json.loads((tiny_tasks["tvt"] / "test.json").read_text()))
    assert abs(rows["embedding"]["tiny_tvt"] - api) <= 1 / n_test + 1e-9
    vit = tmp_path / "vit.pt"
    from hear_abt.cli import main as cli

    cli(["init", "--encoder", "vitc_tiny", "-o", str(vit)])
    with pytest.raises(SystemExit, match="AudioNTT only"):
        lp.main(["--model", str(vit), "--tasks", str(tiny_tasks["scene"])])
    with pytest.raises(SystemExit):
        lp.main(["--model", str(tmp_path / "missing.pt"), "--tasks", str(tiny_tasks["scene"])])
