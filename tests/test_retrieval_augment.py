"""Caption augmentation: mixing, offline paraphrase, local-model rewriter (audiofm.retrieval.augment)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiofm.data.dataset import ClipStore
from audiofm.data.manifest import Row
from audiofm.retrieval.augment import mix_pairs, mixdown, render
from audiofm.retrieval.paraphrase import default_lexicon, join_captions, paraphrase, paraphrase_rows
from audiofm.retrieval.rewriters import LexiconRewriter, local_model_rewriter
from audiofm.retrieval.text import TextModelError

# real captions of the rendered Clotho-style evaluation split (clotho_captions_evaluation.csv)
CAPTIONS = [
    "A man cries out in pain twice.",
    "German is spoken by a voice, followed by a healthy heartbeat.",
    "Crops are harvested while a stream rushes.",
    "Birds are singing.",
    "Birdsong can be heard.",
    "A speaker talking is followed by a healthy heartbeat.",
    "A female voice talking in the German language and a beating heart can be heard.",
    "First a guitar plays, and then someone picks fruit from a bush.",
    "A mid-range note is played on an electric guitar before someone picks fruit from a bush.",
    "Footsteps crunch on snow.",
    "A blade whooshes, feet tread on a wooden floor and Danish is spoken by a person.",
    "A clarinet plays a note in the middle register, followed by a voice speaking.",
    "A fight sound is heard before footsteps crunch on dirt.",
    "A heartbeat with a whooshing murmur is heard, a male speaker talks in German and a saxophone plays a "
    "high-pitched note.",
    "A horse calling is followed by someone speaking.",
    "A male speaker screaming two times can be heard.",
    "A man says something fearfully.",
    "A person reads out two digits, then a fire crackles.",
    "A person says something in an angry voice while a keyboard instrument sounds a note in the middle register.",
    "A person talks fearfully, with a heartbeat in the background.",
    "A speaker reads out the numbers zero and one before a fire crackles.",
    "A voice saying the number two is followed by a weapon swishing through the air two times.",
    "A weapon is used thrice, a person speaks and a speaker says something.",
    "Birds chirp before Belarusian is spoken by someone.",
    "First a cartoonish voice hums thoughtfully two times, then a stone is slung, then a speaker speaks.",
    "First a horse neighs, and then German is spoken by a male voice.",
    "First a lion roars thrice, and then a person talks.",
    "First birds chirp, then someone is working with a tool, then a woman speaks sounding bored.",
    "Flames crackle and burn and German is spoken by someone.",
    "Footsteps can be heard, then an acoustic guitar sounds a note.",
    "Greek is spoken by a person.",
    "Meat is chopped, then a man yells in agony.",
    "Nature sounds fill the background and a speaker speaks Belarusian.",
    "Someone lets out a sound before a person talks in English.",
    "Someone saying the number four is followed by a blade whooshing two times.",
    "Someone takes a few steps, with a beating heart in the background.",
    "The number four is spoken, then tools are being used.",
    "The sound of a male speaker talking in the German language.",
    "The sound of an arrow flying through the air.",
    "The sound of someone screaming.",
    "The sound of waves washing ashore.",
    "Three sounds can be heard: a voice speaking, someone talking in the Danish language and a sheep calling.",
    "Three sounds can be heard: someone speaking sadly, someone working with a tool and a speaker saying the "
    "number seven.",
    "Tools being used is followed by a man talking angrily.",
    "Water flows, then footsteps can be heard.",
    "While a double bass plays a single note, Romanian is spoken by a speaker.",
    "While a fire crackles, a male voice cries out in pain.",
    "While a harmonium sounds a note in the middle register, someone grunts twice and then an animal makes a noise.",
    "While a violin plays a single note, a pickaxe strikes rock two times.",
    "While waves break on the shore, a deep note is played on a keyboard instrument and then a male voice yells "
    "in agony.",
]

# an extractor independent of the module's Lexicon.facts
_COUNTS = {"once": 1, "one time": 1, "twice": 2, "two times": 2, "thrice": 3, "three times": 3}
_NUMBERS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
            "nine": 9, "single": 1, "double": 2}
_LANGUAGES = {"German", "English", "Danish", "Belarusian", "Greek", "Romanian", "French", "Spanish"}
_EMOTIONS = {"fearfully", "angry", "angrily", "sadly", "bored", "thoughtfully", "agony", "pain", "healthy"}


def facts(text: str) -> list[str]:
    low = text.lower()
    found = []
    for phrase, v in sorted(_COUNTS.items(), key=lambda kv: -len(kv[0])):
        n = len(re.findall(rf"\b{phrase}\b", low))
        found += [f"count={v}"] * n
        low = re.sub(rf"\b{phrase}\b", " ", low)
    found += [f"number={_NUMBERS[w]}" for w in re.findall(r"[a-z]+", low) if w in _NUMBERS]
    found += [w for w in re.findall(r"[A-Z][a-z]+", text) if w in _LANGUAGES]
    found += [w for w in re.findall(r"[a-z]+", text.lower()) if w in _EMOTIONS]
    return sorted(found)


# ---------------------------------------------------------------------------------------------- paraphrase

def test_lexicon_loads_and_is_consistent() -> None:
    lex = default_lexicon()
    sizes = lex.sizes()
    assert sizes["verbs"] >= 40 and sizes["nouns"] >= 30 and sizes["forms"] >= 200
    assert lex.facts("A man cries out twice in German, sadly.") == lex.facts("A male voice cries out two times "
                                                                               "in German, sadly.")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paraphrases_keep_every_fact_and_mostly_differ(seed: int) -> None:
    changed = 0
    for c in CAPTIONS:
        p = paraphrase(c, seed)
        assert p == paraphrase(c, seed)                          # deterministic
        assert facts(p) == facts(c), (c, p)
        assert p[0].isupper() and p[-1] in ".!?" and "  " not in p and " ," not in p, p
        assert not re.search(r"\ba [aeiou]", p.lower().replace("a one", "")), p
        changed += p != c
    assert changed >= 0.9 * len(CAPTIONS)


def test_paraphrase_examples_and_seeds_differ() -> None:
    assert {paraphrase("A dog barks loudly.", s) for s in range(10)} >= {"A dog can be heard barking loudly."}
    outs = {paraphrase(CAPTIONS[0], s) for s in range(10)}
    assert len(outs) >= 3
    assert paraphrase("Zzz.", 0) == "Zzz."                       # nothing to rewrite: unchanged


def test_paraphrase_rows_adds_k_new_captions() -> None:
    rows = [Row(path=f"{i}.wav", id=f"c{i}", captions=CAPTIONS[5 * i : 5 * i + 5]) for i in range(4)]
    before = [list(r.captions) for r in rows]
    out = paraphrase_rows(rows, 3, seed=7)
    assert [r.captions for r in rows] == before                  # inputs untouched
    for r, orig in zip(out, before):
        assert r.captions[: len(orig)] == orig and len(r.captions) == len(orig) + 3
        norm = [c.lower().rstrip(".") for c in r.captions]
        assert len(set(norm)) == len(norm)
        for new in r.captions[len(orig):]:
            assert any(facts(new) == facts(o) for o in orig)
    assert [r.captions for r in paraphrase_rows(rows, 3, seed=7)] == [r.captions for r in out]
    assert [r.captions for r in paraphrase_rows(rows, 3, seed=8)] != [r.captions for r in out]
    assert paraphrase_rows([Row(path="x.wav", captions=["Zzz."])], 2, 0)[0].captions == ["Zzz."]


def test_lexicon_rewriter_protocol() -> None:
    rw = LexiconRewriter()
    out = rw.rewrite(CAPTIONS[:5], seed=1)
    assert len(out) == 5 and out == rw.rewrite(CAPTIONS[:5], seed=1)


# ---------------------------------------------------------------------------------------------- joining

@pytest.mark.parametrize(("a", "b", "mode", "conn", "want"), [
    ("A dog barks.", "Rain falls.", "concat", "then", "A dog barks, then rain falls."),
    ("A dog barks.", "Rain falls.", "mix", "while", "A dog barks while rain falls."),
    ("A dog barks", "rain falls!", "mix", "as", "A dog barks as rain falls!"),
    ("A man cries out in pain twice.", "German is spoken by a voice, followed by a healthy heartbeat.", "concat",
     "then", "A man cries out in pain twice, then German is spoken by a voice, followed by a healthy heartbeat."),
    ("Birds are singing.", "A speaker talks in German.", "concat", "followed by",
     "Birds are singing, followed by a speaker talking in German."),
    ("Birds are singing.", "A horse calling.", "concat", "followed by",
     "Birds are singing, followed by a horse calling."),
    ("A dog barks.", "Crops are harvested while a stream rushes.", "concat", "followed by",
     "A dog barks, then crops are harvested while a stream rushes."),
    ("Footsteps crunch on snow.", "The sound of birdsong.", "concat", "before",
     "Footsteps crunch on snow before birdsong can be heard."),
    ("A dog barks.", "First a guitar plays, and then someone picks fruit from a bush.", "concat", "then",
     "A dog barks, then a guitar plays, and then someone picks fruit from a bush."),
    ("Crops are harvested.", "While a heart beats with a murmur, a chicken clucks.", "mix", "while",
     "While a heart beats with a murmur, a chicken clucks while crops are harvested."),
    ("Footsteps crunch on snow.", "An arrow flies.", "mix", "as", "Footsteps crunch on snow as an arrow flies."),
])
def test_join_captions(a: str, b: str, mode: str, conn: str, want: str) -> None:
    assert join_captions(a, b, mode, conn) == want  # type: ignore[arg-type]


def test_join_refuses_wrong_connective() -> None:
    with pytest.raises(ValueError, match="connective"):
        join_captions("A.", "B.", "mix", "then")


# ---------------------------------------------------------------------------------------------- mixing

SR = 8000


def rows_for(n: int = 6) -> list[Row]:
    return [Row(path=f"clip{i}.wav", id=f"clip{i}", captions=[CAPTIONS[2 * i], CAPTIONS[2 * i + 1]]) for i in range(n)]


def test_mix_pairs_is_deterministic_and_well_formed() -> None:
    rows = rows_for()
    items = mix_pairs(rows, 40, seed=3, snr_db=(-5, 5))
    assert items == mix_pairs(rows, 40, seed=3, snr_db=(-5, 5))
    assert items != mix_pairs(rows, 40, seed=4, snr_db=(-5, 5))
    assert len({it.id for it in items}) == 40
    assert {it.mode for it in items} == {"mix", "concat"}
    by_id = {r.id: r for r in rows}
    for it in items:
        a, b = it.sources
        assert a != b and a in by_id and b in by_id
        assert len(it.captions) == 1 and it.captions[0][-1] == "."
        if it.mode == "mix":
            assert -5 <= it.snr_db <= 5 and it.gap_seconds == 0 and 0 <= it.shift < 1
            assert re.search(r" (while|as) |at the same time", it.captions[0])
        else:
            assert it.gains_db == (0.0, 0.0) and it.gap_seconds == 0.25
            assert re.search(r", then |, followed by | before ", it.captions[0])
    assert all(it.mode == "concat" for it in mix_pairs(rows, 5, 0, mode="concat"))
    with pytest.raises(ValueError, match="two clips"):
        mix_pairs(rows[:1], 3, 0)
    with pytest.raises(ValueError, match="mode"):
        mix_pairs(rows, 3, 0, mode="stack")  # type: ignore[arg-type]


def signals(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    sine = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)              # 1 s
    noise = (0.05 * rng.standard_normal(int(0.6 * SR))).astype(np.float32)     # 0.6 s
    return sine, noise


def db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("loud", [1.0, 8.0])       # 8×: the sum is limited to ±1, the ratio must stay
def test_mix_level_and_length(loud: float) -> None:
    sine, noise = signals()
    items = [it for it in mix_pairs(rows_for(), 12, seed=1, mode="mix", snr_db=(-10, 10))]
    for it in items:
        for a, b in ((sine * loud, noise * loud), (noise * loud, sine * loud)):
            m = mixdown(it, (a, b), SR)
            assert len(m.wave) == max(len(a), len(b)) and m.wave.dtype == np.float32
            assert np.max(np.abs(m.wave)) <= 1.0
            oa, ob = m.offsets
            assert min(oa, ob) == 0 and 0 <= max(oa, ob) <= len(m.wave) - min(len(a), len(b))
            first = np.zeros(len(m.wave))
            first[oa : oa + len(a)] = m.gains[0] * a
            second = m.wave - first                                   # measured from the output
            assert abs((db(first[oa : oa + len(a)]) - db(second[ob : ob + len(b)])) - it.snr_db) < 0.1


def test_concat_layout_and_crops() -> None:
    sine, noise = signals()
    it = next(i for i in mix_pairs(rows_for(), 10, seed=2, mode="concat", gap_seconds=0.25))
    m = mixdown(it, (sine, noise), SR)
    gap = round(0.25 * SR)
    assert len(m.wave) == len(sine) + gap + len(noise) and m.offsets == (0, len(sine) + gap)
    np.testing.assert_array_equal(m.wave[: len(sine)], sine)
    assert not m.wave[len(sine) : len(sine) + gap].any()
    np.testing.assert_array_equal(m.wave[len(sine) + gap :], noise)
    short = mixdown(it, (sine, noise), SR, max_seconds=1.0)
    assert len(short.wave) <= SR and short.crops[0][1] > 0.3 * SR and short.crops[1][1] > 0.3 * SR
    np.testing.assert_array_equal(short.wave, mixdown(it, (sine, noise), SR, max_seconds=1.0).wave)
    mixed = next(i for i in mix_pairs(rows_for(), 10, seed=2, mode="mix"))
    assert len(mixdown(mixed, (sine, noise), SR, max_seconds=0.5).wave) == SR // 2


def test_render_decodes_through_clip_store_and_rows(tmp_path: Path) -> None:
    sine, noise = signals()
    rows = []
    for i, w in enumerate((sine, noise, sine[: SR // 2])):
        p = tmp_path / f"c{i}.wav"
        sf.write(p, w, SR, subtype="FLOAT")
        rows.append(Row(path=str(p), id=f"c{i}", captions=[CAPTIONS[i]]))
    store = ClipStore(rows, SR)
    for it in mix_pairs(rows, 6, seed=0):
        got = render(it, store)
        waves = [store.wave(int(s[1:])) for s in it.sources]
        np.testing.assert_array_equal(got, mixdown(it, waves, SR).wave)
        np.testing.assert_array_equal(it.wave(rows, SR), got)
    with pytest.raises(ValueError, match="sample rate"):
        render(mix_pairs(rows, 1, 0)[0], rows)


# ---------------------------------------------------------------------------------------------- local models

def test_local_model_rewriter_refuses_non_models(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(TextModelError, match=r"no-such-model: not a directory.*save_pretrained") as e:
        local_model_rewriter(missing)
    assert "\n" not in str(e.value)
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(TextModelError, match="not a directory"):
        local_model_rewriter(f)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TextModelError, match="no config.json"):
        local_model_rewriter(empty)
    (empty / "config.json").write_text("{}")
    with pytest.raises(TextModelError, match="no weights"):
        local_model_rewriter(empty)
    (empty / "model.safetensors").write_bytes(b"")
    with pytest.raises(TextModelError, match="back_path"):
        local_model_rewriter(empty, "back-translate")
    with pytest.raises(ValueError, match="task"):
        local_model_rewriter(empty, "summarise")  # type: ignore[arg-type]


def _installed_generative_model() -> Path | None:
    """A small seq2seq / causal LM directory shipped inside an installed package, if any."""
    import json
    for site in (Path(p) for p in sys.path if p.endswith("site-packages")):
        for cfg in site.glob("*/**/config.json"):
            try:
                d = json.loads(cfg.read_text())
            except (OSError, ValueError):
                continue
            arch = " ".join(d.get("architectures") or []) if isinstance(d, dict) else ""
            if re.search(r"ForCausalLM|ForConditionalGeneration|LMHeadModel|MTModel", arch):
                return cfg.parent
    return None


def test_local_model_rewriter_with_an_installed_model() -> None:
    path = _installed_generative_model()
    if path is None:
        pytest.skip("no local generative or translation model is installed (site-packages holds only the "
                    "all-MiniLM-L6-v2 sentence encoder); the rewriter is tested on its error paths only")
    rw = local_model_rewriter(path, "paraphrase", max_new_tokens=16)
    out = rw.rewrite(CAPTIONS[:2], seed=0)
    assert len(out) == 2 and all(isinstance(o, str) and o for o in out)
    assert out == rw.rewrite(CAPTIONS[:2], seed=0)
