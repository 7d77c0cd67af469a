"""Audio input: decode (soundfile), mix to mono, resample (soxr), scan datasets for bad files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")


class AudioError(ValueError):
    """An audio file could not be used; the message names the file and what to do."""


def resample(wave: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Resample mono ``wave`` (T,) from ``sr`` to ``target_sr`` with soxr (HQ)."""
    if sr <= 0:
        raise AudioError(f"sample rate must be positive, got {sr}")
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if sr == target_sr or wave.size == 0:
        return wave
    import soxr

    return np.asarray(soxr.resample(wave, sr, target_sr, quality="HQ"), dtype=np.float32)


MAX_CHANNELS = 32
_INT_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31,
              np.dtype(np.int64): 2.0**63}


def to_float(wave: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Samples as float32 in [-1, 1]: floats as they are; integer PCM scaled by its full scale
    (int8/16/32/64 signed, uint8 offset by 128, as WAV stores it); anything else refused."""
    wave = np.asarray(wave)
    if wave.dtype.kind == "f":
        return wave.astype(np.float32, copy=False)
    if wave.dtype in _INT_SCALE:
        return (wave / _INT_SCALE[wave.dtype]).astype(np.float32)
    if wave.dtype == np.uint8:
        return ((wave.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    raise AudioError(f"{name}: audio samples of dtype {wave.dtype} are not supported; pass float samples in "
                     "[-1, 1] or integer PCM (int16, int32, uint8)")


def to_mono(wave: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Mono float32 ``(T,)`` from ``(T,)``, ``(T, C)`` (soundfile's layout) or ``(C, T)``
    (torch's layout), averaging channels. A 2-d array is read as channels × time when its first
    axis is the shorter one; an array whose layout cannot be told (both axes equal, or more than
    ``MAX_CHANNELS`` channels either way) is refused rather than guessed."""
    wave = to_float(wave, name)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise AudioError(f"{name}: expected audio of shape (T,), (T, channels) or (channels, T), got {wave.shape}")
    rows, cols = wave.shape
    if min(rows, cols) > MAX_CHANNELS or (rows == cols and rows > 1):
        raise AudioError(f"{name}: cannot tell time from channels in audio of shape {wave.shape}; pass (T,), "
                         f"(T, channels) or (channels, T) with at most {MAX_CHANNELS} channels")
    axis = 1 if rows >= cols else 0  # average over the short (channel) axis
    return wave.mean(axis=axis).astype(np.float32, copy=False)


def prepare(wave: np.ndarray, sr: int, target_sr: int, name: str = "<array>") -> np.ndarray:
    """Validate an in-memory waveform and bring it to mono float32 at ``target_sr`` (accepted
    layouts and sample types: :func:`to_mono`, :func:`to_float`)."""
    wave = to_mono(wave, name)
    if wave.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    return resample(wave, int(sr), target_sr)


def load_audio(
    path: str | os.PathLike[str], sr: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode ``path`` to mono float32, resampled to ``sr`` if given. Returns (wave, rate).

    ``max_seconds`` reads only the start of the file. Raises :class:`AudioError` naming the
    file for missing, unreadable, corrupt or empty audio.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file (check the path or the manifest entry)")
    return _decode(str(p), str(p), sr, max_seconds)


def load_embedded(path: str | os.PathLike[str], offset: int, frames: int, sr: int | None = None,
                  name: str | None = None) -> tuple[np.ndarray, int]:
    """Like :func:`load_audio` for an audio file of ``frames`` frames stored at byte ``offset``
    inside ``path`` (a tar member): libsndfile reads it in place, from the file descriptor."""
    label = name or f"{path}@{offset}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise AudioError(f"{label}: cannot open {path} ({e.strerror or e})") from None
    try:
        os.lseek(fd, offset, os.SEEK_SET)  # libsndfile takes the current position as the file's start
        return _decode(fd, label, sr, frames=frames)
    finally:
        os.close(fd)


def _decode(src: Any, p: str, sr: int | None, max_seconds: float | None = None,
            frames: int | None = None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(src, closefd=False) as f:
            native = f.samplerate
            n = frames if frames is not None else -1 if max_seconds is None else round(max_seconds * native)
            data = f.read(frames=n, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            f"{p}: cannot decode audio ({e}); re-encode it as WAV/FLAC or remove it from the dataset"
        ) from None
    if data.shape[0] == 0:
        raise AudioError(f"{p}: audio is empty (0 samples); remove it from the dataset")
    if frames is not None and frames >= 0 and data.shape[0] != frames:
        raise AudioError(f"{p}: {data.shape[0]} frames decoded where {frames} are stored; the file is damaged")
    wave = data.mean(axis=1).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{p}: audio contains NaN or infinite samples")
    if sr is not None and sr != native:
        return resample(wave, native, sr), sr
    return wave, native


def audio_info(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(frames, sample rate) of ``path`` without decoding it all; raises AudioError."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot read audio header ({e})") from None
    return int(info.frames), int(info.samplerate)


@dataclass
class BadFile:
    path: str
    reason: str


def scan_files(paths: Iterable[str | os.PathLike[str]], decode: bool = True) -> list[BadFile]:
    """Check every file and return *all* problems (missing, unreadable, empty) at once."""
    bad: list[BadFile] = []
    for path in paths:
        try:
            if decode:
                load_audio(path)
            else:
                frames, _ = audio_info(path)
                if frames == 0:
                    raise AudioError(f"{path}: audio is empty (0 samples)")
        except AudioError as e:
            bad.append(BadFile(str(path), str(e)))
    return bad


def find_audio(root: str | os.PathLike[str]) -> list[Path]:
    """All audio files below ``root`` (recursive, sorted, by extension)."""
    root = Path(root)
    if not root.is_dir():
        raise AudioError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
