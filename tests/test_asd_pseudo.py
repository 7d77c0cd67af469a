"""Pseudo-attribute labels: cluster count by silhouette, fallbacks, real attributes, ARI/NMI."""

from __future__ import annotations

import numpy as np
import pytest

from audiofm.asd.pseudo import attribute_agreement, cluster_embeddings, pseudo_attributes
from audiofm.data.dcase import DcaseClip, clip_attributes
from audiofm.data.manifest import Row


def blobs(k: int, per: int = 12, dim: int = 16, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated clusters on different directions (so they stay apart after L2 normalisation)."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:k] * 3.0
    truth = np.repeat(np.arange(k), per)
    return centres[truth] + spread * rng.normal(size=(k * per, dim)), truth


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_picks_the_right_count(k: int) -> None:
    x, truth = blobs(k, seed=k)
    cl = cluster_embeddings(x)
    assert cl.n_clusters == k
    assert attribute_agreement([str(t) for t in truth], cl.labels)["ari"] == pytest.approx(1.0)
    assert max(cl.silhouettes, key=lambda c: cl.silhouettes[c]) == k


def test_other_linkages_and_unknown() -> None:
    x, _ = blobs(3, seed=4)
    assert cluster_embeddings(x, linkage="average").n_clusters == 3
    assert cluster_embeddings(x, linkage="complete", normalize=False).n_clusters == 3
    with pytest.raises(ValueError, match="unknown linkage"):
        cluster_embeddings(x, linkage="kmeans")


def test_one_cluster_fallback() -> None:
    x = np.random.default_rng(0).normal(size=(60, 16)) + 5.0     # one Gaussian blob: no structure
    cl = cluster_embeddings(x)
    assert cl.n_clusters == 1 and set(cl.labels.tolist()) == {0}
    assert "silhouette" in cl.criterion and max(cl.silhouettes.values()) < 0.25
    tiny = cluster_embeddings(np.ones((2, 4)))
    assert tiny.n_clusters == 1 and tiny.criterion == "too few clips"
    with pytest.raises(ValueError, match="finite"):
        cluster_embeddings(np.full((5, 3), np.nan))


def test_agreement_values_by_hand() -> None:
    assert attribute_agreement(list("aabb"), [0, 0, 1, 1]) == pytest.approx({"ari": 1.0, "nmi": 1.0})
    assert attribute_agreement(list("aabb"), [7, 7, 3, 3]) == pytest.approx({"ari": 1.0, "nmi": 1.0})
    # crossed: every contingency cell holds 1 -> index 0, expected (2 * 2) / 6 = 2/3, max 2:
    #   ARI = (0 - 2/3) / (2 - 2/3) = -1/2; NMI = 0 (the clusters carry no information)
    got = attribute_agreement(list("aabb"), [0, 1, 0, 1])
    assert got["ari"] == pytest.approx(-0.5) and got["nmi"] == pytest.approx(0.0, abs=1e-12)


def row(machine: str, i: int, domain: str, attrs: dict[str, str] | None) -> Row:
    clip = DcaseClip(machine=machine, section="00", split="train", index=f"{i:04d}", domain=domain, label="normal",
                     attributes=attrs or {}, attributes_hidden=attrs is None)
    return Row(path=f"{machine}/{i}.wav", split="train", domain=domain, labels=["normal"],
               attributes=clip_attributes(clip, 2024))


def test_pseudo_attributes_per_machine() -> None:
    xa, ta = blobs(3, per=10, seed=1)
    xb, tb = blobs(2, per=10, seed=2)
    rows = [row("fan", i, "source", {"mdl": f"m{t}"}) for i, t in enumerate(ta)] + \
           [row("brush", i, "source" if i % 2 else "target", None) for i in range(len(tb))]
    x = np.vstack([xa, xb])
    out = pseudo_attributes(rows, x)
    assert out.source == {"fan": "attributes", "brush": "clusters"}
    assert out.labels[0] == "fan/mdl=m0" and len({lab for lab in out.labels if lab.startswith("fan/")}) == 3
    assert out.clusterings["brush"].n_clusters == 2 and out.agreement == {}
    brush = [lab for lab in out.labels if lab.startswith("brush/")]
    assert attribute_agreement([str(t) for t in tb], brush)["ari"] == pytest.approx(1.0)
    # asked to cluster even where attributes exist: the clusters are checked against them
    forced = pseudo_attributes(rows, x, use_attributes=False)
    assert forced.source["fan"] == "clusters" and forced.agreement["fan"] == pytest.approx({"ari": 1.0, "nmi": 1.0})
    per = pseudo_attributes(rows, x, per_domain=True)
    assert set(per.clusterings) == {"brush/source", "brush/target"}
    assert all(lab.startswith(("brush/source/c", "brush/target/c")) for lab in per.labels if lab.startswith("brush"))
    with pytest.raises(ValueError, match="rows but"):
        pseudo_attributes(rows, x[:3])
