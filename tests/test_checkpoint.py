"""Checkpoint format: round trip, fp16 storage, atomic writes."""
from __future__ import annotations

import pytest
import torch

import hear_abt
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
