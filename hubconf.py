"""torch.hub entry points: `torch.hub.load(path_to_clone, "abt", source="local")`.

Loads offline from a clone (the bundled checkpoint lives in checkpoints/).
"""
dependencies = ["torch", "torchaudio", "numpy"]


def abt(checkpoint: str = "", **options):
    """The Audio Barlow Twins model with the bundled weights (or `checkpoint`),
    ready for hear_abt's HEAR API: get_scene_embeddings(audio, model) and
    get_timestamp_embeddings(audio, model) with 16 kHz float audio [n, samples].
    options: load_model's (scene_pooling, timestamp_window_ms, chunk_seconds)."""
    from hear_abt import load_model

    return load_model(checkpoint, **options)
