"""Audio–caption mixing for retrieval training (arXiv 2509.16649). Everything is a pure function
of its seed and nothing downloads.

``mix_pairs(rows, n, seed)`` draws ``n`` :class:`AugmentedItem` s, each from two clips of
different ids, overlaid (``"mix"``: the second at a level ``snr_db`` below the first, measured as
the RMS ratio of the two sources) or concatenated (``"concat"``: the first, ``gap_seconds`` of
silence, the second), with the two captions joined by a connective that matches the mode
(:func:`audiofm.retrieval.paraphrase.join_captions`). An item holds only ids and numbers;
``render(item, clips)`` (or ``item.wave(clips)``) decodes the sources through
:class:`~audiofm.data.dataset.ClipStore` / :func:`~audiofm.data.dataset.load_row` and returns the
waveform, and :func:`mixdown` does the same on waveforms already decoded, returning the layout
(sample offsets, linear gains, crops) too. Training code treats an item like a clip: ``item.id``,
``item.captions`` and ``item.wave(clips)``.

Text-side augmentation: :mod:`audiofm.retrieval.paraphrase` (offline paraphrases) and
:mod:`audiofm.retrieval.rewriters` (a user's own local text model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..data.dataset import ClipStore, load_row
from ..data.manifest import DataError, Row
from .paraphrase import CONCAT_CONNECTIVES, MIX_CONNECTIVES, Lexicon, default_lexicon, join_captions

MODES = ("mix", "concat", "both")  # mix_pairs(mode=...)


@dataclass(frozen=True)
class AugmentedItem:
    """A new training clip made of two clips. id: unique (``"<mode>:<a>+<b>#<seed>.<k>"``).
    mode: ``"mix"`` or ``"concat"``. sources: the two row ids, in caption order (concat: play
    order). gains_db: level of each source relative to the first one's RMS (mix: ``(0, -snr_db)``;
    concat: ``(0, 0)``, both at their own level). shift: mix only, where the shorter source starts
    within the longer one, as a fraction of the free length. gap_seconds: concat only, the silence
    between. seed: for the crops ``max_seconds`` asks for. captions: the joined caption(s)."""

    id: str
    mode: str
    sources: tuple[str, str]
    gains_db: tuple[float, float]
    shift: float
    gap_seconds: float
    seed: int
    captions: tuple[str, ...]

    @property
    def snr_db(self) -> float:
        """Level of the first source over the second (dB)."""
        return self.gains_db[0] - self.gains_db[1]

    def wave(self, clips: ClipStore | Sequence[Row], sr: int | None = None, *,
             max_seconds: float | None = None) -> np.ndarray:
        """The rendered waveform (see :func:`render`)."""
        return render(self, clips, sr, max_seconds=max_seconds)


def mix_pairs(rows: Sequence[Row], n: int, seed: int, *, mode: Literal["mix", "concat", "both"] = "both",
              snr_db: tuple[float, float] = (-5.0, 5.0), gap_seconds: float = 0.25, captions_per_item: int = 1,
              lexicon: Lexicon | None = None) -> list[AugmentedItem]:
    """``n`` new items from random pairs of clips with different ids (a pure function of the
    rows' ids and captions, ``n``, ``seed`` and the settings). ``mode="both"`` picks mix or
    concat per item with equal chance; the mix level ``snr_db`` is uniform in (low, high)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}; choose one of {', '.join(MODES)}")
    lo, hi = float(snr_db[0]), float(snr_db[1])
    if lo > hi:
        raise ValueError(f"snr_db must be (low, high), got {snr_db}")
    if gap_seconds < 0 or n < 0 or captions_per_item < 1:
        raise ValueError("gap_seconds and n must be >= 0 and captions_per_item >= 1")
    usable = [r for r in rows if r.captions]
    if n and len({r.id for r in usable}) < 2:
        raise ValueError("mixing needs at least two clips with different ids and captions")
    lex = lexicon or default_lexicon()
    rng = np.random.default_rng(seed)
    items: list[AugmentedItem] = []
    for k in range(n):
        i = int(rng.integers(len(usable)))
        j = int(rng.integers(len(usable) - 1))
        j = j + 1 if j >= i else j
        while usable[j].id == usable[i].id:        # duplicate ids among rows: draw again
            j = int(rng.integers(len(usable)))
        a, b = usable[i], usable[j]
        m = ("mix", "concat")[int(rng.integers(2))] if mode == "both" else mode
        snr = float(rng.uniform(lo, hi)) if lo < hi else lo
        shift = float(rng.random())
        item_seed = int(rng.integers(2**62))
        conns = MIX_CONNECTIVES if m == "mix" else CONCAT_CONNECTIVES
        caps: list[str] = []
        for _ in range(captions_per_item):
            ca = a.captions[int(rng.integers(len(a.captions)))]
            cb = b.captions[int(rng.integers(len(b.captions)))]
            cap = join_captions(ca, cb, m, conns[int(rng.integers(len(conns)))], lex)
            if cap not in caps:
                caps.append(cap)
        items.append(AugmentedItem(
            id=f"{m}:{a.id}+{b.id}#{seed}.{k}", mode=m, sources=(a.id, b.id),
            gains_db=(0.0, -snr) if m == "mix" else (0.0, 0.0), shift=shift if m == "mix" else 0.0,
            gap_seconds=gap_seconds if m == "concat" else 0.0, seed=item_seed, captions=tuple(caps)))
    return items


@dataclass
class Mixdown:
    """A rendered item: ``wave`` and where each source went (samples), its linear gain and the
    (start, length) crop taken from it."""

    wave: np.ndarray
    offsets: tuple[int, int]
    gains: tuple[float, float]
    crops: tuple[tuple[int, int], tuple[int, int]]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def mixdown(item: AugmentedItem, waves: tuple[np.ndarray, np.ndarray] | Sequence[np.ndarray], sr: int, *,
            max_seconds: float | None = None) -> Mixdown:
    """Render ``item`` from its two decoded sources (mono, at ``sr``).

    mix: length = the longer source; the shorter starts at ``shift`` × the free length; the
    second source is scaled so that RMS(first) / RMS(gain × second) = ``snr_db`` (a silent
    source is left as is); if the sum would exceed ±1 both are scaled down together (the ratio
    stays). concat: first, ``gap_seconds`` of zeros, second, at their own levels.
    ``max_seconds`` crops the sources first (deterministic in ``item.seed``) so that the result
    fits and both sources stay audible: mix crops each to ``max_seconds``; concat shares
    ``max_seconds − gap`` between them (a short one keeps its length, the other gets the rest).
    """
    a = np.asarray(waves[0], dtype=np.float32)
    b = np.asarray(waves[1], dtype=np.float32)
    if a.ndim != 1 or b.ndim != 1 or not a.size or not b.size:
        raise ValueError(f"item {item.id}: sources must be non-empty mono waveforms")
    rng = np.random.default_rng(item.seed)
    gap = round(item.gap_seconds * sr)
    if max_seconds is not None:
        budget = round(max_seconds * sr)
        if item.mode == "concat":
            room = max(2, budget - gap)
            half = room // 2
            la = min(len(a), max(half, room - len(b)))
            lb = min(len(b), room - la)
        else:
            la, lb = min(len(a), budget), min(len(b), budget)
    else:
        la, lb = len(a), len(b)
    sa = int(rng.integers(len(a) - la + 1))
    sb = int(rng.integers(len(b) - lb + 1))
    a, b = a[sa : sa + la], b[sb : sb + lb]
    crops = ((sa, la), (sb, lb))
    if item.mode == "concat":
        wave = np.concatenate([a, np.zeros(gap, dtype=np.float32), b])
        return Mixdown(wave=wave, offsets=(0, la + gap), gains=(1.0, 1.0), crops=crops)
    if item.mode != "mix":
        raise ValueError(f"item {item.id}: unknown mode {item.mode!r}")
    ra, rb = _rms(a), _rms(b)
    g = 1.0
    if ra > 0 and rb > 0:
        g = ra / rb * 10 ** ((item.gains_db[1] - item.gains_db[0]) / 20)
    length = max(la, lb)
    free = length - min(la, lb)
    start = min(free, int(item.shift * (free + 1)))
    offsets = (0, start) if la >= lb else (start, 0)
    wave = np.zeros(length, dtype=np.float64)
    wave[offsets[0] : offsets[0] + la] += a
    wave[offsets[1] : offsets[1] + lb] += g * b
    peak = float(np.max(np.abs(wave)))
    scale = 0.99 / peak if peak > 0.99 else 1.0
    return Mixdown(wave=(wave * scale).astype(np.float32), offsets=offsets, gains=(scale, g * scale), crops=crops)


def render(item: AugmentedItem, clips: ClipStore | Sequence[Row], sr: int | None = None, *,
           max_seconds: float | None = None) -> np.ndarray:
    """The item's waveform: its sources decoded by ``clips`` (a ClipStore, whose cache and sample
    rate are used, or rows decoded with ``load_row`` at ``sr``) and combined by :func:`mixdown`."""
    if isinstance(clips, ClipStore):
        rate = clips.sample_rate
        where = {r.id: i for i, r in enumerate(clips.rows)}
        missing = [s for s in item.sources if s not in where]
        if missing:
            raise DataError(f"item {item.id}: clip(s) {', '.join(missing)} are not in the clip store")
        waves = [clips.wave(where[s]) for s in item.sources]
    else:
        if sr is None:
            raise ValueError("render from rows needs the sample rate sr")
        rate = sr
        by_id: Mapping[str, Row] = {r.id: r for r in clips}
        missing = [s for s in item.sources if s not in by_id]
        if missing:
            raise DataError(f"item {item.id}: clip(s) {', '.join(missing)} are not among the rows")
        waves = [load_row(by_id[s], rate) for s in item.sources]
    return mixdown(item, waves, rate, max_seconds=max_seconds).wave
