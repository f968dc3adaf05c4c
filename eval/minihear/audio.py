"""Small audio helpers shared by every task: decode, resample, mix, write.

Everything works on float32 mono numpy arrays at 16 kHz. Source files are
decoded once per process (lru_cache) because the same few hundred recordings
are reused for thousands of clips.
"""
from __future__ import annotations

import functools
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

SR = 16000


def resample(x: np.ndarray, sr_in: int, sr_out: int = SR) -> np.ndarray:
    """Polyphase resampling (exact rational ratio), float32 out."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    r = Fraction(sr_out, sr_in).limit_denominator(1000)
    return resample_poly(x, r.numerator, r.denominator).astype(np.float32)


@functools.lru_cache(maxsize=512)
def load(path: str) -> np.ndarray:
    """Decode any file libsndfile reads (wav/flac/aiff/ogg) to 16 kHz mono float32.

    Leading/trailing near-silence is trimmed so that event boundaries and
    placement refer to the audible part of each recording.
    """
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = resample(x.mean(axis=1), sr)
    return trim_silence(x)


def trim_silence(x: np.ndarray, rel_db: float = -40.0) -> np.ndarray:
    """Cut samples before the first / after the last one above peak + rel_db."""
    if x.size == 0:
        return x
    peak = float(np.abs(x).max())
    if peak == 0.0:
        return x[:0]
    idx = np.flatnonzero(np.abs(x) > peak * 10 ** (rel_db / 20))
    return x[idx[0] : idx[-1] + 1]


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad or trim at the end to exactly n samples, as hearpreprocess does."""
    if x.size >= n:
        return x[:n]
    return np.pad(x, (0, n - x.size))


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Tape-style speed change (pitch and tempo together) by resampling."""
    if abs(factor - 1.0) < 1e-3:
        return x
    from scipy.signal import resample

    return resample(x, max(1, int(round(x.size / factor)))).astype(np.float32)


def place(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Put x at a random offset inside n samples (random crop if x is longer)."""
    if x.size >= n:
        s = int(rng.integers(0, x.size - n + 1))
        return x[s : s + n].copy()
    out = np.zeros(n, np.float32)
    s = int(rng.integers(0, n - x.size + 1))
    out[s : s + x.size] = x
    return out


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spec /= f ** (exponent / 2)
    y = np.fft.irfft(spec, n).astype(np.float32)
    return y / rms(y)


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Add white/pink/brown noise (drawn from rng) at snr_db relative to x's RMS."""
    noise = colored_noise(x.size, rng, float(rng.choice([0.0, 1.0, 2.0])))
    return x + noise * (rms(x) / 10 ** (snr_db / 20))


def reverb(x: np.ndarray, reverberance: float, room_scale: float, damping: float = 50.0) -> np.ndarray:
    """sox's freeverb ('reverb' effect) on a mono float buffer; output has x's length."""
    cmd = [
        "sox", "-q", "-t", "raw", "-r", str(SR), "-e", "floating-point", "-b", "32", "-c", "1", "-",
        "-t", "raw", "-e", "floating-point", "-b", "32", "-",
        "reverb", f"{reverberance:.1f}", f"{damping:.1f}", f"{room_scale:.1f}",
    ]
    out = subprocess.run(cmd, input=x.astype(np.float32).tobytes(), capture_output=True, check=True)
    y = np.frombuffer(out.stdout, dtype=np.float32)
    return fit_length(y.copy(), x.size)


def nuisance(
    x: np.ndarray,
    rng: np.random.Generator,
    snr_db: tuple[float, float],
    reverb_prob: float = 0.5,
    gain_db: tuple[float, float] = (-20.0, -1.0),
) -> np.ndarray:
    """Realistic recording conditions: optional room reverb, background noise, level.

    The result is scaled to a random peak level in gain_db (dBFS), so nothing
    is ever clipped.
    """
    if rng.random() < reverb_prob:
        x = reverb(x, rng.uniform(20, 90), rng.uniform(20, 100))
    if rms(x) > 1e-6:
        x = add_noise(x, rng, rng.uniform(*snr_db))
    return peak_normalize(x, rng.uniform(*gain_db))


def peak_normalize(x: np.ndarray, peak_db: float) -> np.ndarray:
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        return x.astype(np.float32)
    return (x * (10 ** (peak_db / 20) / peak)).astype(np.float32)


def write_wav(path: Path, x: np.ndarray) -> None:
    """16 kHz mono PCM16 (what hearpreprocess writes); x must lie in [-1, 1]."""
    import soundfile as sf

    if x.size and float(np.abs(x).max()) > 1.0:
        raise ValueError(f"{path}: peak {np.abs(x).max():.3f} > 1, normalise before writing")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, SR, subtype="PCM_16")
