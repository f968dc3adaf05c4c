"""Checkpoint format: round trip, fp16 storage, atomic writes.

Below: value-by-value tests written to kill mutation-testing survivors (tools/mutation.py).
"""
from __future__ import annotations

import re

import pytest
import torch

import hear_abt
from hear_abt import __version__
from hear_abt import checkpoint as ck
from hear_abt import checkpoint as ckmod


def test_round_trip_and_fp16_storage(rand_ckpt, tmp_path, example_wav):
    ck = ckmod.load_checkpoint(rand_ckpt)
    half = ckmod.make_checkpoint(
        encoder_name=ck["encoder"]["name"], encoder_kwargs=ck["encoder"]["kwargs"], mel=ck["mel"],
        norm_stats=ck["norm_stats"], state_dict=ck["state_dict"], half=True,
    )
    p = tmp_path / "half.pt"
    ckmod.save_checkpoint(half, p)
    assert p.stat().st_size < 0.6 * rand_ckpt.stat().st_size
    x = example_wav[None]
    a = hear_abt.get_scene_embeddings(x, hear_abt.load_model(str(rand_ckpt)))
    b = hear_abt.get_scene_embeddings(x, hear_abt.load_model(str(p)))
    cos = torch.nn.functional.cosine_similarity(a, b).item()
    assert cos > 0.9999, cos


def test_bad_norm_stats_are_refused():
    with pytest.raises(ValueError, match="std > 0"):
        ckmod.make_checkpoint(encoder_name="audiontt", encoder_kwargs={}, mel={}, norm_stats=(0.0, 0.0),
                              state_dict={"w": torch.zeros(1)})


def test_interrupted_save_keeps_the_old_file(rand_ckpt, tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(rand_ckpt.read_bytes())
    before = target.read_bytes()

    def dies_halfway(obj, f):
        f.write(b"partial garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckmod.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckmod.atomic_torch_save({"x": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left


# ---------------------------------------------------------------------- value by value
# hear_abt/checkpoint.py value by value (written to kill mutmut's mutants;
def exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def make(**kw):
    base = dict(encoder_name="audiontt", encoder_kwargs={"a": 1}, mel={"n_mels": 64}, norm_stats=(-2.5, 4.0),
                state_dict={"w": torch.ones(2, 2), "n": torch.tensor(3)})
    base.update(kw)
    return ck.make_checkpoint(**base)


def test_make_checkpoint_fields():
    sd = {"w": torch.ones(2, 2, requires_grad=True), "n": torch.tensor(3)}
    c = make(state_dict=sd, train_config={"steps": 5}, step=7, provenance={"kind": "test", "seed": 1})
    assert c["format"] == "hear-abt" and c["format_version"] == 1
    assert c["encoder"] == {"name": "audiontt", "kwargs": {"a": 1}} and c["mel"] == {"n_mels": 64}
    assert c["norm_stats"] == [-2.5, 4.0] and all(type(v) is float for v in c["norm_stats"])
    assert c["train_config"] == {"steps": 5} and c["step"] == 7 and type(c["step"]) is int
    prov = c["provenance"]
    assert prov["kind"] == "test" and prov["seed"] == 1 and prov["hear_abt_version"] == __version__
    assert prov["torch_version"] == str(torch.__version__) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", prov["created"])
    assert c["state_dict"]["w"].dtype == torch.float32 and not c["state_dict"]["w"].requires_grad
    assert c["state_dict"]["w"] is not sd["w"] and c["state_dict"]["w"].data_ptr() != sd["w"].data_ptr()
    assert make()["train_config"] is None and make()["step"] == 0
    half = make(half=True)
    assert half["state_dict"]["w"].dtype == torch.float16 and half["state_dict"]["n"].dtype == torch.int64
    assert make(provenance={"hear_abt_version": "x"})["provenance"]["hear_abt_version"] == "x"  # caller's wins


@pytest.mark.parametrize("stats", [(0.0, 0.0), (0.0, -1.0), (float("nan"), 1.0), (0.0, float("inf"))])
def test_bad_norm_stats(stats):
    with pytest.raises(ValueError, match=r"^norm_stats must be finite with std > 0, got"):
        make(norm_stats=stats)


def test_save_load_round_trip_casts_back_to_float32(tmp_path):
    p = tmp_path / "sub" / "c.pt"
    ck.save_checkpoint(make(half=True), p)
    got = ck.load_checkpoint(p)
    assert got["state_dict"]["w"].dtype == torch.float32 and got["state_dict"]["n"].dtype == torch.int64
    assert torch.equal(got["state_dict"]["w"], torch.ones(2, 2)) and got["norm_stats"] == [-2.5, 4.0]
    assert sorted(x.name for x in p.parent.iterdir()) == ["c.pt"]


def test_save_validates_first(tmp_path):
    with pytest.raises(ck.CheckpointError):
        ck.save_checkpoint({"format": "hear-abt"}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_load_errors(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=exact(
            f"checkpoint not found: {missing}. Make a random-weights one with `hear-abt init -o {missing}` "
            "or train one with `python -m hear_abt.train`.")):
        ck.load_checkpoint(missing)
    with pytest.raises(ck.CheckpointError, match=exact(f"{tmp_path} is a directory; pass the path of a .pt checkpoint file")):
        ck.load_checkpoint(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello")
    with pytest.raises(ck.CheckpointError, match=exact(
            f"{junk} is not a readable checkpoint (truncated or corrupt, or not written by torch.save)")):
        ck.load_checkpoint(junk)


def valid() -> dict:
    return make()


@pytest.mark.parametrize("change, msg", [
    (lambda c: ["x"], "SRC holds a list, not a hear-abt checkpoint dict"),
    (lambda c: {**c, "format": "other"}, "SRC is not a hear-abt checkpoint (no format='hear-abt'). Make one with "
                                         "`hear-abt init` or `python -m hear_abt.train`."),
    (lambda c: {"w": torch.zeros(1)}, "SRC is not a hear-abt checkpoint (no format='hear-abt'). It looks like a plain "
                                      "state_dict; hear-abt checkpoints also carry the encoder name, mel config and "
                                      "normalisation stats. Make one with `hear-abt init` or the trainer's export."),
    (lambda c: {}, "SRC is not a hear-abt checkpoint (no format='hear-abt'). Make one with `hear-abt init` or "
                   "`python -m hear_abt.train`."),
    (lambda c: {**c, "format_version": 2}, "SRC has checkpoint format_version 2; this hear-abt reads version 1. "
                                           "Install the hear-abt release that wrote it."),
    (lambda c: {k: v for k, v in c.items() if k not in ("mel", "state_dict")}, "SRC lacks the keys ['mel', 'state_dict']"),
    (lambda c: {**c, "encoder": {"name": 3, "kwargs": {}}}, "SRC: 'encoder' must be {'name': str, 'kwargs': dict}, got {'name': 3, 'kwargs': {}}"),
    (lambda c: {**c, "encoder": {"name": "a", "kwargs": []}}, "SRC: 'encoder' must be {'name': str, 'kwargs': dict}, got {'name': 'a', 'kwargs': []}"),
    (lambda c: {**c, "encoder": "audiontt"}, "SRC: 'encoder' must be {'name': str, 'kwargs': dict}, got 'audiontt'"),
    (lambda c: {**c, "norm_stats": [1.0, 0.0]}, "SRC: 'norm_stats' must be [mean, std] with std > 0, got [1.0, 0.0]"),
    (lambda c: {**c, "norm_stats": [1.0, 2.0, 3.0]}, "SRC: 'norm_stats' must be [mean, std] with std > 0, got [1.0, 2.0, 3.0]"),
    (lambda c: {**c, "norm_stats": "ab"}, "SRC: 'norm_stats' must be [mean, std] with std > 0, got 'ab'"),
    (lambda c: {**c, "state_dict": {}}, "SRC: 'state_dict' must be a non-empty dict of tensors"),
    (lambda c: {**c, "state_dict": {"w": 1.0}}, "SRC: 'state_dict' must be a non-empty dict of tensors"),
    (lambda c: {**c, "state_dict": [torch.zeros(1)]}, "SRC: 'state_dict' must be a non-empty dict of tensors"),
])
def test_validation_messages(change, msg):
    with pytest.raises(ck.CheckpointError, match=exact(msg.replace("SRC", "src.pt"))):
        ck.validate_checkpoint(change(valid()), source="src.pt")


def test_validation_accepts_tuple_stats_and_default_source():
    ck.validate_checkpoint({**valid(), "norm_stats": (0.0, 1e-3)})
    with pytest.raises(ck.CheckpointError, match="^checkpoint holds a int"):
        ck.validate_checkpoint(3)
    assert issubclass(ck.CheckpointError, ValueError)


def test_atomic_save_replaces_and_leaves_no_temp_file(tmp_path):
    p = tmp_path / "deep" / "er" / "x.pt"
    ck.atomic_torch_save({"a": torch.arange(3)}, p)
    ck.atomic_torch_save({"a": torch.arange(4)}, p)
    assert torch.load(p, weights_only=True)["a"].tolist() == [0, 1, 2, 3]
    assert [x.name for x in p.parent.iterdir()] == ["x.pt"]


def test_atomic_save_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(ck.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    ck.atomic_torch_save({"a": torch.zeros(1)}, tmp_path / "y.pt")
    assert len(synced) == 2
