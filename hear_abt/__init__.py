"""hear-abt: Audio Barlow Twins (arXiv 2209.14345) for the HEAR 2021 benchmark.

The HEAR API is these three functions; everything else lives in submodules.
"""
from .hear_api import get_scene_embeddings, get_timestamp_embeddings, load_model
from .version import __version__

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "__version__"]
