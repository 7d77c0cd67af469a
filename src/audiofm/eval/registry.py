"""Names the evaluation code shares, in a module light enough for the command line."""

from __future__ import annotations

PROBES = ("linear", "mlp", "knn")
DETERMINISTIC_PROBES = frozenset({"linear", "knn"})
