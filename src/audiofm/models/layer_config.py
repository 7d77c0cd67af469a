"""Build-time layer choices, in the manner of timm's ``set_layer_config(exportable=...)``.

``exportable=True`` makes the modules built inside :func:`set_layer_config` pick layers that
``torch.export`` / ONNX can trace with dynamic batch and length: the STFT as a real matmul with
the DFT basis, no data-dependent branches, and loops written as a scan (``torch``'s ``scan``
higher-order op while tracing; the same step function in a plain loop in eager mode). Modules
read the flag once, at construction; the normal (default) layers stay the reference path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

_EXPORTABLE = False


def is_exportable() -> bool:
    """Whether modules being built now should use their traceable (export) form."""
    return _EXPORTABLE


@contextmanager
def set_layer_config(exportable: bool | None = None) -> Iterator[None]:
    """Within the block, modules are built exportable (``True``) or normal (``False``);
    ``None`` keeps the current setting."""
    global _EXPORTABLE
    previous = _EXPORTABLE
    if exportable is not None:
        _EXPORTABLE = bool(exportable)
    try:
        yield
    finally:
        _EXPORTABLE = previous


def traceable_scan(step: Callable[[Any, Any], tuple[Any, Any]], init: Any, xs: Any, dim: int = 0) -> tuple[Any, Any]:
    """``(final carry, stacked outputs)`` of ``carry, y = step(carry, x)`` over slices of ``xs``
    along ``dim``; outputs are stacked on a new leading axis. While tracing (``torch.export``,
    ``torch.compile``) it is ``torch``'s ``scan`` higher-order op (an ONNX ``Scan`` node, any
    length); otherwise the same ``step`` in a Python loop. ``step`` must not return views of its
    inputs, and should not close over tensors whose shape depends on the input (a traced scan
    body gives them fresh sizes): pass such tensors in the carry."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        from torch._higher_order_ops.scan import scan

        # scan along dim 0 (a scan along another dim confused dynamic sizes when traced)
        return scan(step, init, torch.utils._pytree.tree_map(lambda x: x.movedim(dim, 0), xs), dim=0)
    leaves, spec = torch.utils._pytree.tree_flatten(xs)
    carry, ys = init, []
    for t in range(leaves[0].shape[dim]):
        x = torch.utils._pytree.tree_unflatten([leaf.select(dim, t) for leaf in leaves], spec)
        carry, y = step(carry, x)
        ys.append(y)
    out_leaves = [list(v) for v in zip(*(torch.utils._pytree.tree_flatten(y)[0] for y in ys))]
    out_spec = torch.utils._pytree.tree_flatten(ys[0])[1]
    return carry, torch.utils._pytree.tree_unflatten([torch.stack(v) for v in out_leaves], out_spec)
