"""The shipped default checkpoint: what load_model("") and README's main command
use. Its model card must describe this exact file."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

import hear_abt
from hear_abt.cli import EXAMPLES_DIR, main
from hear_abt.hear_api import default_checkpoint_path

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "checkpoints" / "default.pt"
CARD = ROOT / "checkpoints" / "README.md"


def test_default_is_a_finished_pretrained_fp16_checkpoint():
    assert default_checkpoint_path().resolve() == CKPT.resolve()
    assert CKPT.stat().st_size < 30 * 2**20
    raw = torch.load(CKPT, weights_only=True)
    assert raw["provenance"]["kind"] == "abt-pretrained" and raw["encoder"]["name"] == "audiontt"
    assert raw["step"] == raw["train_config"]["steps"] > 0  # the end of a run, not a partial state
    floats = [v for v in raw["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert all(torch.isfinite(v).all() for v in floats)


def test_model_card_describes_this_file():
    card = CARD.read_text()
    assert hashlib.sha256(CKPT.read_bytes()).hexdigest() in card
    raw = torch.load(CKPT, weights_only=True)
    assert f"{raw['step']} steps" in card and f"batch {raw['train_config']['batch_size']}" in card
    assert "not trained on AudioSet" in card
    for image in re.findall(r"\]\(([^)]+\.png)\)", card):
        assert (CARD.parent / image).is_file(), image


def test_readme_main_command_uses_the_default(tmp_path, capsys):
    """`hear-abt embed hear_abt/examples/speech_and_bell.wav --timestamps -o out/`"""
    main(["embed", str(EXAMPLES_DIR / "speech_and_bell.wav"), "--timestamps", "-o", str(tmp_path)])
    scene = np.load(tmp_path / "speech_and_bell.scene.npy")
    emb = np.load(tmp_path / "speech_and_bell.timestamps.npy")
    assert scene.shape == (3072,) and emb.shape == (93, 3072) and np.isfinite(emb).all()
    main(["info"])
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after embed's summary line
    assert Path(info["file"]).resolve() == CKPT.resolve() and info["provenance"]["kind"] == "abt-pretrained"


def test_default_differs_from_random_weights(rand_ckpt, example_wav):
    """A guard against shipping an untrained export: the trained encoder maps
    the clip somewhere else than the random-weights one does."""
    x = example_wav[None]
    a = hear_abt.get_scene_embeddings(x, hear_abt.load_model(""))
    b = hear_abt.get_scene_embeddings(x, hear_abt.load_model(str(rand_ckpt)))
    assert torch.nn.functional.cosine_similarity(a, b).item() < 0.9
