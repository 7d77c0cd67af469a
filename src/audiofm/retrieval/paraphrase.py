"""Caption text for retrieval augmentation (arXiv 2509.16649): offline paraphrases and joined
captions. Everything is a pure function of its seed and nothing downloads.

Paraphrase. ``paraphrase(caption, seed)`` rewrites a caption with the curated lexicon shipped
beside this module (``lexicon.json``: synonym sets of sound-description words and phrases, and the
protected fact words) and a few meaning-keeping templates ("The sound of X." ↔ "X can be heard.",
"A dog barks." ↔ "A dog can be heard barking.", "X before Y." → "Y after X.", "While X, Y." ↔
"Y while X.", "in the German language" ↔ "in German", ...). A candidate is kept only when its
facts (numbers, counts, languages, emotions, gender words: :meth:`Lexicon.facts`) equal the
original's. ``paraphrase_rows(rows, k, seed)`` adds up to ``k`` new captions per clip.

Joining. ``join_captions(a, b, mode, connective)`` makes one fluent caption for two sounds mixed
("X while Y" / "X as Y") or concatenated ("X, then Y" / "X, followed by Y" / "X before Y"); the
audio side is :mod:`audiofm.retrieval.augment`.

No maintained offline lexical resource was found to add: the WordNet packages on PyPI either
download their data at run time (``wn``, nltk's corpora) or hold word lists without synonym
relations (``wordnet-lookup``), so the curated lexicon is the only source. Rewriting with a
local text model: :mod:`audiofm.retrieval.rewriters`.
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
from typing import Literal

from ..data.manifest import DataError, Row

MIX_CONNECTIVES = ("while", "as")
CONCAT_CONNECTIVES = ("then", "followed by", "before")
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
# Joining two captions

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
