"""Training pictures."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..io import atomic_path


def plot_loss(metrics: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path | None:
    """Loss (log scale) against step from a metrics JSONL file; None when there is nothing to plot."""
    rows = [json.loads(ln) for ln in Path(metrics).read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if "loss" in r]
    if len(rows) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(Path(out).parent.name)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return Path(out)
