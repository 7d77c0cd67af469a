"""Pretrained peer encoders as offline evaluation baselines (see ``docs/peers.md``).

Each peer wraps a published network whose weights ship inside a PyPI package (nothing is
downloaded at run time) and implements :class:`audiofm.embedding.AudioEmbedder`::

    from audiofm.peers import get_peer, list_peers, peer_info
    peer = get_peer("resemblyzer")
    emb = peer.embed(wave, sr)  # any rate; resampled to peer.sample_rate

The peers need ``pip install 'audiofm[peers]'`` plus the ``--no-deps`` packages listed in
``requirements-peers.txt``; a missing one raises :class:`MissingPeerDependency` (an ImportError).
BirdNET's weights are CC BY-NC-SA 4.0 (non-commercial): check ``peer_info(name).license``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from audiofm.embedding import AudioEmbedder
from audiofm.peers._base import INSTALL_HINT, MissingPeerDependency, PeerInfo

__all__ = ["INSTALL_HINT", "MissingPeerDependency", "PeerInfo", "get_peer", "list_peers", "peer_info", "peer_settings"]


@dataclass(frozen=True)
class _Entry:
    module: str  # audiofm.peers.<module>, imported on first use
    cls: str


_REGISTRY: dict[str, _Entry] = {
    "aisfx": _Entry("aisfx", "AisfxPeer"),
    "birdnet": _Entry("birdnet", "BirdnetPeer"),
    "resemblyzer": _Entry("resemblyzer", "ResemblyzerPeer"),
    "crepe": _Entry("crepe", "CrepePeer"),
}


def list_peers() -> list[str]:
    """Names accepted by :func:`get_peer`."""
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown peer {name!r}; known peers: {', '.join(_REGISTRY)}") from None


def _module(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{_entry(name).module}")


def peer_info(name: str) -> PeerInfo:
    """Rate, dim, window, hop, pooling, licence and pip packages of a peer at default settings.

    Needs no optional package (the peer modules import only torch and numpy at import time).
    """
    info: PeerInfo = _module(name).INFO
    return info


def peer_settings(name: str) -> list[str]:
    """Keyword settings the constructor of peer ``name`` accepts (e.g. ``hop_ms``, ``capacity``)."""
    import inspect

    cls = getattr(_module(name), _entry(name).cls)
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def get_peer(name: str, **kwargs: Any) -> AudioEmbedder:
    """Build peer ``name`` with its pretrained weights; ``None`` kwargs keep the peer's default.

    Raises KeyError for an unknown name, ValueError for a setting the peer does not have (listing
    those it has) and MissingPeerDependency when its package is missing.
    """
    accepted = peer_settings(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"peer {name!r} has no setting {', '.join(unknown)}; its settings: {', '.join(accepted)}")
    cls = getattr(_module(name), _entry(name).cls)
    peer: AudioEmbedder = cls(**{k: v for k, v in kwargs.items() if v is not None})
    return peer
