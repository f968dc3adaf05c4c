"""hear_abt/checkpoint.py value by value (written to kill mutmut's mutants;
eval/mutation.py): every field make_checkpoint writes, every validation error
with its exact message, the fp16/fp32 casts and the atomic write."""
from __future__ import annotations

import re

import pytest
import torch

from hear_abt import __version__
from hear_abt import checkpoint as ck


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
