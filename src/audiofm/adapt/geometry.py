"""Embedding geometry by class: mean intra-/inter-class cosine, their gap, RankMe, and a 2-D
projection plot (PCA, or t-SNE) coloured by class.

Cosines are computed on embeddings z-scored with a *reference* set's statistics (the training
split, as the probes do) when one is given, so they describe what the kNN probe sees; RankMe is
computed on the raw embeddings (as :mod:`audiofm.eval.rankme` does). For multi-label data a pair
counts as intra-class when the two clips share at least one label.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path


@dataclass
class Geometry:
    """intra_cosine / inter_cosine: mean cosine over same-class / different-class pairs
    (i ≠ j); gap = intra − inter (higher = tighter, better separated clusters); rankme:
    effective rank of the raw embeddings; n: clips."""

    intra_cosine: float
    inter_cosine: float
    gap: float
    rankme: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _unit(z: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(z, axis=1, keepdims=True)
    return np.divide(z, n, out=np.zeros_like(z), where=n > 0)


def _same_class(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) bool: equal class (indices) or at least one shared label (multi-hot)."""
    if a.ndim == 1:
        return a[:, None] == b[None, :]
    return (a.astype(np.float32) @ b.astype(np.float32).T) > 0


def class_cosines(z: np.ndarray, labels: np.ndarray, chunk: int = 1024) -> tuple[float, float]:
    """(mean intra-class cosine, mean inter-class cosine) over pairs i ≠ j of ``z (N, D)``.

    ``labels``: (N,) class indices or (N, C) multi-hot. Memory O(chunk · N). NaN when a kind of
    pair does not occur."""
    z = np.asarray(z, dtype=np.float64)
    labels = np.asarray(labels)
    if z.ndim != 2 or len(z) != len(labels):
        raise ValueError(f"need z (N, D) and N labels; got {z.shape} and {labels.shape}")
    u = _unit(z)
    n = len(u)
    s_in = s_out = 0.0
    c_in = c_out = 0
    for a in range(0, n, chunk):
        sim = u[a : a + chunk] @ u.T  # (b, N)
        same = _same_class(labels[a : a + chunk], labels)
        rows = np.arange(a, min(a + chunk, n))
        same[rows - a, rows] = False
        diff = ~same
        diff[rows - a, rows] = False
        s_in += float(sim[same].sum())
        c_in += int(same.sum())
        s_out += float(sim[diff].sum())
        c_out += int(diff.sum())
    return (s_in / c_in if c_in else float("nan")), (s_out / c_out if c_out else float("nan"))


def geometry(z: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> Geometry:
    """Geometry of ``z (N, D)`` with ``labels``; cosines after z-scoring with ``reference``
    statistics (e.g. the training split) when given."""
    from ..eval.probes import standardize
    from ..eval.rankme import rankme

    zz = standardize(reference, z)[1] if reference is not None else z
    intra, inter = class_cosines(zz, labels)
    return Geometry(intra, inter, intra - inter, rankme(z), len(z))


def project_2d(z: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) projection of ``z (N, D)`` by PCA or t-SNE (scikit-learn)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, z.shape[0], z.shape[1])
        p = PCA(n_components=k, random_state=seed).fit_transform(z)
        return np.pad(p, ((0, 0), (0, 2 - k)))
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    raise ValueError(f"projection must be 'pca' or 'tsne', got {method!r}")


def plot_projections(panels: list[tuple[str, np.ndarray]], labels: np.ndarray, class_names: list[str],
                     out: str | os.PathLike[str], method: str = "pca", seed: int = 0,
                     suptitle: str | None = None) -> Path:
    """One scatter panel per ``(title, z (N, D))``, points coloured by class, written as PNG.

    ``labels``: (N,) class indices, or (N, C) multi-hot (coloured by the first label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    cls = labels if labels.ndim == 1 else np.argmax(labels > 0, axis=1)
    C = len(class_names)
    cmap = plt.get_cmap("tab10" if C <= 10 else "tab20" if C <= 20 else "turbo")
    colours = [cmap(i if C <= 20 else i / max(1, C - 1)) for i in range(C)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), dpi=110, squeeze=False)
    for ax, (title, z) in zip(axes[0], panels):
        p = project_2d(np.asarray(z, dtype=np.float64), method, seed)
        for c in range(C):
            sel = cls == c
            if sel.any():
                ax.scatter(p[sel, 0], p[sel, 1], s=14, color=colours[c], alpha=0.8, linewidths=0,
                           label=class_names[c])
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    right = 1.0
    if C <= 20:
        right = 1.0 - 1.3 / fig.get_figwidth()  # room for the legend
        handles, names = axes[0][-1].get_legend_handles_labels()
        fig.legend(handles, names, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=7, frameon=False,
                   markerscale=1.5)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, right, 0.95 if suptitle else 1))
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
