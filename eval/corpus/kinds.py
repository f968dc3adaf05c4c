"""What the synthetic and the real corpus builders share: clip length, mixes,
and the report kind of each synthetic clip kind. One module both import, so
neither imports the other for a constant."""
from __future__ import annotations

CLIP_S = 10.0  # seconds per corpus clip, synthetic and real alike
MIXES = ("real", "synthetic", "both")
# What each synthetic kind counts as in the report.
SYNTH_KIND = {"speech": "speech", "music": "music", "drums": "music", "game_music": "music", "sfx": "environment"}
