"""The errors hear-abt's library raises.

Library code raises these; only the entry points (`hear-abt`, `python -m
hear_abt.train`, `python -m hear_abt.train.probe`) turn them into a message on
stderr and exit status 1, so a notebook or another driver can catch them.
Each also derives from the built-in type callers caught before these existed.
"""
from __future__ import annotations


class HearAbtError(Exception):
    """Base of every error hear-abt raises on purpose; str(e) is the message for the user."""


class ConfigError(HearAbtError, ValueError):
    """A setting that cannot work (an unknown key, a bad value, a mismatch)."""


class DataError(HearAbtError, ValueError):
    """Audio, a manifest, a log-mel cache or a probe task that cannot be used."""


class TrainError(HearAbtError, RuntimeError):
    """Training cannot go on (no usable state, a state that cannot be saved)."""


class CheckpointError(HearAbtError, ValueError):
    """A file that is not a usable hear-abt checkpoint."""
