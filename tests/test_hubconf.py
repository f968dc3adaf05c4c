"""torch.hub.load on a clone returns the model with the bundled weights, offline."""
from __future__ import annotations

from pathlib import Path

import torch

import hear_abt

REPO = Path(__file__).resolve().parent.parent


def test_hub_load_local_gives_the_bundled_model(example_wav, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached to fall back on
    hub_model = torch.hub.load(str(REPO), "abt", source="local", trust_repo=True)
    ref = hear_abt.load_model()
    assert isinstance(hub_model, type(ref))
    x = example_wav.unsqueeze(0)
    torch.testing.assert_close(
        hear_abt.get_scene_embeddings(x, hub_model), hear_abt.get_scene_embeddings(x, ref), rtol=0, atol=0
    )
    assert not any(tmp_path.iterdir())  # downloaded nothing
    opts = torch.hub.load(str(REPO), "abt", source="local", trust_repo=True, scene_pooling="timestamps")
    assert opts.options.scene_pooling == "timestamps"
