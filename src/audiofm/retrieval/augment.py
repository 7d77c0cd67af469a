"""Caption augmentation for retrieval training (arXiv 2509.16649): audio–caption mixing, offline
paraphrases, and a hook for a user's own local text model. Everything is a pure function of its
seed and nothing downloads.

Mixing. ``mix_pairs(rows, n, seed)`` draws ``n`` :class:`AugmentedItem` s, each from two clips of
different ids, overlaid (``"mix"``: the second at a level ``snr_db`` below the first, measured as
the RMS ratio of the two sources) or concatenated (``"concat"``: the first, ``gap_seconds`` of
silence, the second), with the two captions joined by a connective that matches the mode
("X while Y" / "X as Y"; "X, then Y" / "X, followed by Y" / "X before Y"). An item holds only ids
and numbers; ``render(item, clips)`` (or ``item.wave(clips)``) decodes the sources through
:class:`~audiofm.data.dataset.ClipStore` / :func:`~audiofm.data.dataset.load_row` and returns the
waveform, and :func:`mixdown` does the same on waveforms already decoded, returning the layout
(sample offsets, linear gains, crops) too. Training code treats an item like a clip: ``item.id``,
``item.captions`` and ``item.wave(clips)``.

Paraphrase. ``paraphrase(caption, seed)`` rewrites a caption with the curated lexicon shipped
beside this module (``lexicon.json``: synonym sets of sound-description words and phrases, and the
protected fact words) and a few meaning-keeping templates ("The sound of X." ↔ "X can be heard.",
"A dog barks." ↔ "A dog can be heard barking.", "X before Y." → "Y after X.", "While X, Y." ↔
"Y while X.", "in the German language" ↔ "in German", ...). A candidate is kept only when its
facts (numbers, counts, languages, emotions, gender words: :meth:`Lexicon.facts`) equal the
original's. ``paraphrase_rows(rows, k, seed)`` adds up to ``k`` new captions per clip.

No maintained offline lexical resource was found to add: the WordNet packages on PyPI either
download their data at run time (``wn``, nltk's corpora) or hold word lists without synonym
relations (``wordnet-lookup``), so the curated lexicon is the only source.

Local models. :class:`TextRewriter` is the protocol (``rewrite(captions, seed) -> captions``);
:class:`LexiconRewriter` is the offline default and ``local_model_rewriter(path, task)`` wraps a
local transformers model directory (paraphrase with a seq2seq or causal LM, or back-translation
with two translation models), loaded with ``local_files_only`` and the Hugging Face offline
switches set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ..data.dataset import ClipStore, load_row
from ..data.manifest import DataError, Row
from .text import EXTRA, TextModelError

MIX_CONNECTIVES = ("while", "as")
CONCAT_CONNECTIVES = ("then", "followed by", "before")
MODES = ("mix", "concat", "both")
REWRITE_TASKS = ("paraphrase", "back-translate")
LEXICON_PATH = Path(__file__).with_name("lexicon.json")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts (stable across processes, unlike ``hash``)."""
    h = hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# ----------------------------------------------------------------------------------------------
# Lexicon

def _phrase_pattern(phrase: str) -> str:
    body = re.escape(phrase).replace(r"\ ", r"\s+")
    head = r"(?<![\w-])" if phrase[:1].isalnum() else ""
    return head + body + r"(?![\w-])"


@dataclass
class Lexicon:
    """Synonym sets (lower-case surface forms), 3rd-person → -ing verb forms and protected words."""

    synonyms: dict[str, list[list[str]]]
    verbs_ing: dict[str, str]
    languages: frozenset[str]
    emotions: frozenset[str]
    numbers: dict[str, int]
    counts: dict[str, int]
    _index: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for group, sets in self.synonyms.items():
            for s in sets:
                if len(s) < 2 or len(set(s)) != len(s):
                    raise ValueError(f"lexicon {group} set {s}: needs two or more distinct forms")
                for w in s:
                    if w != w.lower():
                        raise ValueError(f"lexicon {group} set {s}: forms must be lower case")
                    if w in self._index:
                        raise ValueError(f"lexicon: {w!r} is in two synonym sets")
                    self._index[w] = s
        forms = sorted(self._index, key=lambda w: (-len(w), w))
        self._pattern = re.compile("|".join(_phrase_pattern(w) for w in forms), re.IGNORECASE)
        self._ing_to_verb = {v: k for k, v in self.verbs_ing.items()}
        count_forms = sorted(self.counts, key=lambda w: (-len(w), w))
        self._count_re = re.compile("|".join(_phrase_pattern(w) for w in count_forms), re.IGNORECASE)

    @classmethod
    def load(cls, path: str | os.PathLike[str] = LEXICON_PATH) -> Lexicon:
        """Read a lexicon file (the format of the shipped ``lexicon.json``)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            prot = d["protected"]
            return cls(synonyms={g: [list(s) for s in sets] for g, sets in d["synonyms"].items()},
                       verbs_ing=dict(d["verbs_ing"]), languages=frozenset(prot["languages"]),
                       emotions=frozenset(prot["emotions"]), numbers=dict(prot["numbers"]),
                       counts=dict(prot["counts"]))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{p}: not a lexicon file ({e}); expected keys synonyms, verbs_ing, protected") from None

    def sizes(self) -> dict[str, int]:
        """Number of synonym sets per group and of forms overall."""
        out = {g: len(s) for g, s in self.synonyms.items()}
        out["forms"] = len(self._index)
        out["verbs_ing"] = len(self.verbs_ing)
        return out

    def matches(self, text: str) -> list[tuple[int, int, list[str]]]:
        """Non-overlapping (start, end, synonym set) spans of lexicon forms, longest form first."""
        assert self._pattern is not None
        return [(m.start(), m.end(), self._index[" ".join(m.group(0).lower().split())])
                for m in self._pattern.finditer(text)]

    def facts(self, text: str) -> Counter[str]:
        """What a paraphrase must keep: numbers and counts (as values), languages, emotions, gender."""
        low = text.lower()
        out: Counter[str] = Counter(f"count={self.counts[' '.join(m.group(0).split())]}"
                                    for m in self._count_re.finditer(low))
        low = self._count_re.sub(" ", low)
        for w in re.findall(r"[a-z]+|\d+", low):
            if w.isdigit():
                out[f"number={int(w)}"] += 1
            elif w in self.numbers:
                out[f"number={self.numbers[w]}"] += 1
            elif w in self.languages or w in self.emotions:
                out[w] += 1
            elif w in _GENDER:
                out[_GENDER[w]] += 1
        return out

    def is_proper(self, word: str) -> bool:
        """Whether a sentence-initial word keeps its capital inside a sentence."""
        w = word.strip(",.;:!?\"'")
        return w.lower() in self.languages or w == "I" or (len(w) > 1 and w.isupper())


_GENDER = {"man": "male", "men": "male", "male": "male", "boy": "male", "woman": "female", "women": "female",
           "female": "female", "girl": "female"}


@functools.lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The lexicon shipped with audiofm (``audiofm/retrieval/lexicon.json``)."""
    return Lexicon.load(LEXICON_PATH)


# ----------------------------------------------------------------------------------------------
# Sentence helpers

def _split_end(caption: str) -> tuple[str, str]:
    """(body without final punctuation, the final punctuation or "")."""
    s = " ".join(caption.split())
    m = re.search(r"[.!?]+$", s)
    if m is None:
        return s.rstrip(",;: "), ""
    return s[: m.start()].rstrip(",;: "), m.group(0)


def _lower_first(s: str, lex: Lexicon) -> str:
    if not s:
        return s
    first = s.split(" ", 1)[0]
    return s if lex.is_proper(first) else s[0].lower() + s[1:]


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


_AN_EXCEPTIONS = ("one", "once", "uni", "use", "usu", "eu", "ewe", "ufo")
_A_EXCEPTIONS = ("hour", "honest", "honou", "heir")


def fix_articles(text: str) -> str:
    """a/an before each word by its first sound (vowel letter, with a few common exceptions)."""
    def pick(m: re.Match[str]) -> str:
        art, word = m.group(1), m.group(2)
        w = word.lower()
        vowel = w[:1] in "aeiou"
        if w.startswith(_AN_EXCEPTIONS):
            vowel = False
        if w.startswith(_A_EXCEPTIONS):
            vowel = True
        new = "an" if vowel else "a"
        if art[0].isupper():
            new = new.capitalize()
        return f"{new} {word}"
    return re.sub(r"(?<![\w-])([Aa]n?) ([A-Za-z][\w-]*)", pick, text)


def _finish(body: str, end: str) -> str:
    body = " ".join(body.split()).strip(" ,")
    return _upper_first(fix_articles(body)) + (end or ".")


# ----------------------------------------------------------------------------------------------
# Templates (whole-caption rewrites that keep the meaning); each returns None when it does not apply

_DETERMINERS = ("a", "an", "the", "one", "someone", "somebody", "something")
_FINITE = re.compile(r"\b(?:is|are|was|were|can|could|will|has|have)\b", re.IGNORECASE)


def _t_sound_of(body: str, lex: Lexicon) -> str | None:
    m = re.fullmatch(r"The sound of (.+)", body)
    if m is None or re.search(r"[,;:]", body):
        return None
    return f"{m.group(1)} can be heard"


def _t_can_be_heard(body: str, lex: Lexicon) -> str | None:
    m = re.fullmatch(r"(.+?) can be heard", body)
    if m is None or re.search(r"[,;:]", body) or re.search(r"\b(?:while|then|as|before)\b", body, re.IGNORECASE):
        return None
    x = m.group(1)
    if _FINITE.search(x) or x.lower().startswith(("three sounds", "two sounds", "sounds")):
        return None
    return f"The sound of {_lower_first(x, lex)}"


def _t_is_heard(body: str, lex: Lexicon) -> str | None:
    if not re.search(r"\bis heard\b", body):
        return None
    return re.sub(r"\bis heard\b", "can be heard", body, count=1)


def _subject_verb(words: list[str], lex: Lexicon, table: Mapping[str, str]) -> int | None:
    """Index of the verb after a short singular subject ("a dog", "someone", "the old man"), if any."""
    if not words or words[0].lower() not in _DETERMINERS:
        return None
    for i in range(1, min(len(words), 5)):
        w = words[i]
        if w in table:
            return i
        if _FINITE.fullmatch(w) or w in lex.verbs_ing or not re.fullmatch(r"[\w-]+", w):
            return None
    return None


def _t_heard_verbing(body: str, lex: Lexicon) -> str | None:
    """"A dog barks loudly" → "A dog can be heard barking loudly" (singular subject, known verb)."""
    words = body.split(" ")
    i = _subject_verb(words, lex, lex.verbs_ing)
    if i is None:
        return None
    return " ".join([*words[:i], "can be heard", lex.verbs_ing[words[i]], *words[i + 1:]])


def _t_verb_from_heard(body: str, lex: Lexicon) -> str | None:
    m = re.match(r"(.+?) can be heard ([a-z]+ing)\b(.*)", body)
    if m is None or m.group(2) not in lex._ing_to_verb:
        return None
    subject = m.group(1).split(" ")
    if subject[0].lower() not in _DETERMINERS or len(subject) > 4 or _FINITE.search(m.group(1)):
        return None
    return f"{m.group(1)} {lex._ing_to_verb[m.group(2)]}{m.group(3)}"


def _t_before_after(body: str, lex: Lexicon) -> str | None:
    if "," in body or body.count(" before ") != 1 or re.search(r"\b(?:after|while|then)\b", body):
        return None
    x, y = body.split(" before ")
    return f"{_upper_first(y)} after {_lower_first(x, lex)}"


def _t_followed_by(body: str, lex: Lexicon) -> str | None:
    if "," in body or body.count(" is followed by ") != 1:
        return None
    x, y = body.split(" is followed by ")
    return f"{_upper_first(y)} follows {_lower_first(x, lex)}"


def _t_while_front(body: str, lex: Lexicon) -> str | None:
    m = re.fullmatch(r"While ([^,]+), ([^,]+)", body)
    if m is None:
        return None
    return f"{_upper_first(m.group(2))} while {_lower_first(m.group(1), lex)}"


def _t_while_back(body: str, lex: Lexicon) -> str | None:
    if "," in body or body.count(" while ") != 1:
        return None
    x, y = body.split(" while ")
    return f"While {y}, {_lower_first(x, lex)}"


def _t_language(body: str, lex: Lexicon) -> str | None:
    m = re.search(r"\bin the ([A-Z][a-z]+) language\b", body)
    if m is not None and m.group(1).lower() in lex.languages:
        return body[: m.start()] + f"in {m.group(1)}" + body[m.end():]
    for m2 in re.finditer(r"\bin ([A-Z][a-z]+)\b", body):
        if m2.group(1).lower() in lex.languages:
            return body[: m2.start()] + f"in the {m2.group(1)} language" + body[m2.end():]
    return None


def _t_first_then(body: str, lex: Lexicon) -> str | None:
    m = re.fullmatch(r"First ([^,]+), and then ([^,]+)", body)
    if m is not None:
        return f"{_upper_first(m.group(1))}, then {m.group(2)}"
    m = re.fullmatch(r"([^,]+), then ([^,]+)", body)
    if m is not None and not body.startswith(("First", "While")):
        return f"First {_lower_first(m.group(1), lex)}, and then {m.group(2)}"
    return None


TEMPLATES: tuple[Callable[[str, Lexicon], str | None], ...] = (
    _t_sound_of, _t_can_be_heard, _t_is_heard, _t_heard_verbing, _t_verb_from_heard, _t_before_after,
    _t_followed_by, _t_while_front, _t_while_back, _t_language, _t_first_then)


# ----------------------------------------------------------------------------------------------
# Paraphrase

def _case_like(src: str, new: str) -> str:
    return _upper_first(new) if src[:1].isupper() else new


def _substitute(text: str, lex: Lexicon, rng: random.Random, force: bool) -> str:
    spans = lex.matches(text)
    if not spans:
        return text
    chosen = [rng.random() < 0.5 for _ in spans]
    if force and not any(chosen):
        chosen[rng.randrange(len(spans))] = True
    out, pos = [], 0
    for (a, b, options), use in zip(spans, chosen):
        if not use:
            continue
        current = " ".join(text[a:b].lower().split())
        new = rng.choice([o for o in options if o != current])
        out.append(text[pos:a])
        out.append(_case_like(text[a:b], new))
        pos = b
    out.append(text[pos:])
    return "".join(out)


def _norm(caption: str) -> str:
    return " ".join(_split_end(caption)[0].lower().split())


def paraphrase(caption: str, seed: int, lexicon: Lexicon | None = None, *, avoid: Sequence[str] = ()) -> str:
    """A rewrite of ``caption`` with the same facts, or ``caption`` itself when none is found.

    Deterministic in ``(caption, seed)``. A template may rewrite the sentence and lexicon forms
    are swapped for synonyms; candidates whose :meth:`Lexicon.facts` differ from the original's,
    or that equal the caption or one of ``avoid`` (compared ignoring case and final punctuation),
    are dropped (up to 8 tries).
    """
    lex = lexicon or default_lexicon()
    rng = random.Random(derive_seed("paraphrase", seed, caption))
    want = lex.facts(caption)
    body0, end = _split_end(caption)
    banned = {_norm(caption), *(_norm(a) for a in avoid)}
    for _ in range(8):
        body = body0
        options = [t for t in (f(body, lex) for f in TEMPLATES) if t is not None and t != body]
        templated = bool(options) and rng.random() < 0.6
        if templated:
            body = rng.choice(options)
        body = _substitute(body, lex, rng, force=not templated)
        cand = _finish(body, end)
        if _norm(cand) not in banned and lex.facts(cand) == want:
            return cand
    return caption


def paraphrase_rows(rows: Sequence[Row], k: int, seed: int, lexicon: Lexicon | None = None) -> list[Row]:
    """Copies of ``rows`` with up to ``k`` paraphrased captions appended to each (new captions
    never repeat one the clip already has; fewer than ``k`` when the lexicon runs out)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    lex = lexicon or default_lexicon()
    out: list[Row] = []
    for row in rows:
        caps = list(row.captions)
        have = {_norm(c) for c in caps}
        added: list[str] = []
        for j in range(k):
            if not caps:
                break
            for t in range(4 * len(caps)):
                src = caps[(j + t) % len(caps)]
                cand = paraphrase(src, derive_seed(seed, row.id, j, t), lex, avoid=[*caps, *added])
                if _norm(cand) not in have:
                    added.append(cand)
                    have.add(_norm(cand))
                    break
        out.append(replace(row, captions=[*caps, *added], labels=list(row.labels), attributes=dict(row.attributes)))
    return out


# ----------------------------------------------------------------------------------------------
# Mixing

def _join_mix(a: str, b: str, connective: str, lex: Lexicon) -> str:
    xa, _ = _split_end(a)
    xb, end = _split_end(b)
    xa, xb = (_t_sound_of(xa, lex) or xa), (_t_sound_of(xb, lex) or xb)
    a_while, b_while = xa.startswith("While "), xb.startswith("While ")
    if b_while and not a_while:
        xa, xb = xb, xa
    if a_while and b_while:
        return _finish(f"{xa}, and at the same time {_lower_first(xb, lex)}", end)
    return _finish(f"{xa} {connective} {_lower_first(xb, lex)}", end)


def _gerund_phrase(body: str, lex: Lexicon) -> str | None:
    """"rain falls on a roof" → "rain falling on a roof"; a noun phrase as is; None for other clauses."""
    heard = _t_heard_verbing(body, lex)
    if heard is not None:
        return heard.replace(" can be heard ", " ", 1)
    words = body.lower().split()
    if _FINITE.search(body) or any(w in lex.verbs_ing for w in words) or "," in body:
        return None
    return body


def _join_concat(a: str, b: str, connective: str, lex: Lexicon) -> str:
    xa, _ = _split_end(a)
    xb, end = _split_end(b)
    xb = _t_sound_of(xb, lex) or xb
    if xb.startswith("First "):
        xb = xb[len("First "):]
    xb = _lower_first(xb, lex)
    if connective == "followed by":
        np_b = _gerund_phrase(xb, lex)
        if np_b is None:
            connective = "then"
        else:
            return _finish(f"{xa}, followed by {np_b}", end)
    if connective == "before":
        return _finish(f"{xa} before {xb}", end)
    return _finish(f"{xa}, then {xb}", end)


def join_captions(first: str, second: str, mode: Literal["mix", "concat"], connective: str,
                  lexicon: Lexicon | None = None) -> str:
    """One caption for two sounds: ``"A dog barks."`` + ``"Rain falls."`` → ``"A dog barks, then
    rain falls."`` (concat) / ``"A dog barks while rain falls."`` (mix). Connectives:
    ``MIX_CONNECTIVES`` for ``"mix"``, ``CONCAT_CONNECTIVES`` for ``"concat"``."""
    lex = lexicon or default_lexicon()
    if mode == "mix":
        if connective not in MIX_CONNECTIVES:
            raise ValueError(f"mix connective {connective!r}; choose one of {', '.join(MIX_CONNECTIVES)}")
        return _join_mix(first, second, connective, lex)
    if mode == "concat":
        if connective not in CONCAT_CONNECTIVES:
            raise ValueError(f"concat connective {connective!r}; choose one of {', '.join(CONCAT_CONNECTIVES)}")
        return _join_concat(first, second, connective, lex)
    raise ValueError(f"mode {mode!r}; choose mix or concat")


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


# ----------------------------------------------------------------------------------------------
# Text rewriters

class TextRewriter(Protocol):
    """Rewrites captions (same order, same meaning); deterministic in ``seed``."""

    def rewrite(self, captions: Sequence[str], seed: int) -> list[str]: ...


class LexiconRewriter:
    """The offline default: :func:`paraphrase` with the curated lexicon."""

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self.lexicon = lexicon or default_lexicon()

    def rewrite(self, captions: Sequence[str], seed: int) -> list[str]:
        return [paraphrase(c, derive_seed(seed, i), self.lexicon) for i, c in enumerate(captions)]


def _check_generator_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise TextModelError(f"{p}: not a directory; pass the folder of a local transformers model (one written "
                             "by save_pretrained); hub names are never downloaded")
    if not (p / "config.json").is_file():
        raise TextModelError(f"{p}: no config.json; not a transformers model directory (save the model with "
                             "save_pretrained and pass that folder)")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise TextModelError(f"{p}: no weights (*.safetensors or *.bin) in the model directory")
    return p.resolve()


def _transformers() -> Any:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers
    except ImportError:
        raise TextModelError(f"transformers is not installed; install the '{EXTRA}' extra: "
                             f"pip install 'audiofm[{EXTRA}]'") from None
    return transformers


class _Generator:
    """One local seq2seq or causal LM with its tokenizer."""

    def __init__(self, path: Path, device: str) -> None:
        tf = _transformers()
        cfg = tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
        self.seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
        auto = tf.AutoModelForSeq2SeqLM if self.seq2seq else tf.AutoModelForCausalLM
        self.tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = auto.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.device = device

    def __call__(self, prompts: list[str], seed: int, sample: bool, max_new_tokens: int) -> list[str]:
        import torch
        out: list[str] = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for p in prompts:
                enc = self.tokenizer(p, return_tensors="pt").to(self.device)
                kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sample}
                if sample:
                    kw["top_p"] = 0.9
                pad = self.tokenizer.pad_token_id
                kw["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
                ids = self.model.generate(**enc, **kw)[0]
                if not self.seq2seq:
                    ids = ids[enc["input_ids"].shape[1]:]
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                out.append(" ".join(text.strip().splitlines()[0].split()) if text.strip() else "")
        return out


class LocalModelRewriter:
    """A :class:`TextRewriter` over a local transformers model (see :func:`local_model_rewriter`)."""

    def __init__(self, path: Path, task: str, back_path: Path | None, prompt: str, max_new_tokens: int,
                 device: str) -> None:
        self.path, self.task, self.back_path = path, task, back_path
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self.forward = _Generator(path, device)
        self.back = _Generator(back_path, device) if back_path is not None else None

    def rewrite(self, captions: Sequence[str], seed: int) -> list[str]:
        caps = list(captions)
        if self.task == "back-translate":
            assert self.back is not None
            middle = self.forward(caps, seed, False, self.max_new_tokens)
            out = self.back(middle, seed, False, self.max_new_tokens)
        else:
            out = self.forward([self.prompt.format(caption=c) for c in caps], seed, True, self.max_new_tokens)
        # an empty generation keeps the original caption
        return [o if o else c for o, c in zip(out, caps)]


PARAPHRASE_PROMPT = "paraphrase: {caption}"


def local_model_rewriter(path: str | os.PathLike[str], task: Literal["paraphrase", "back-translate"] = "paraphrase",
                         *, back_path: str | os.PathLike[str] | None = None, prompt: str = PARAPHRASE_PROMPT,
                         max_new_tokens: int = 48, device: str = "cpu") -> LocalModelRewriter:
    """A rewriter over a user's LOCAL transformers model directory (nothing is downloaded).

    ``"paraphrase"``: ``path`` is a seq2seq or causal LM; each caption is put into ``prompt``
    (``{caption}``) and one continuation is sampled (seeded). ``"back-translate"``: ``path``
    translates English into a pivot language and ``back_path`` back (e.g. two Marian models
    saved locally); greedy decoding. The output is not fact-checked: review it, or keep only
    rewrites whose :meth:`Lexicon.facts` match.
    """
    if task not in REWRITE_TASKS:
        raise ValueError(f"task {task!r}; choose one of {', '.join(REWRITE_TASKS)}")
    p = _check_generator_dir(path)
    if task == "back-translate" and back_path is None:
        raise TextModelError(f"{p}: back-translation needs back_path, the local model translating back into English")
    bp = _check_generator_dir(back_path) if back_path is not None else None
    if "{caption}" not in prompt:
        raise ValueError(f"prompt {prompt!r} must contain {{caption}}")
    return LocalModelRewriter(p, task, bp, prompt, max_new_tokens, device)
