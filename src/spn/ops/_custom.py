"""The ``torch.ops.spn`` propagation ops: schemas, fake (meta) implementations and autograd
formulas, defined once for every device.

Their kernels are registered on these same ops: the C++ ones (``spn._C``) for CPU, the Triton
ones (:mod:`spn.ops.triton.ops`) for CUDA, and the dispatcher picks one by the tensors' device.
The backward of each op is its own op (one reverse sweep per direction) that needs only the
forward output, not per-step autograd state. ``direction``, ``merge`` and ``normalize`` are the
codes of :mod:`spn.ops._codes`; ``chunk`` 0 means one chunk.

- ``propagate_fwd(x, gates, input_weight?, direction, normalize, chunk) -> h``
- ``propagate_bwd(grad_h, x, gates, input_weight?, h, direction, normalize, chunk) -> (gx, ggates, gl)``
- ``propagate4_fwd(x, gates4, input_weight4?, merge, normalize, chunk, save) -> (out, hs)``:
  ``hs`` is the four directional maps ``(B, 4, C, H, W)`` when ``save`` and ``merge`` is not
  ``"none"``, else empty (with ``"none"`` the output itself is those maps);
- ``propagate4_bwd(grad_out, x, gates4, input_weight4?, hs, merge, normalize, chunk) -> (gx, ggates, gl)``.

``gl`` is empty when there is no input weight. Outputs have the dtype of ``x``.
"""
from __future__ import annotations

import torch

from ._codes import MERGE_CODES

_MERGE_NONE = MERGE_CODES["none"]

SCHEMAS = {
    "propagate_fwd": "(Tensor x, Tensor gates, Tensor? input_weight, int direction, int normalize, int chunk) "
                     "-> Tensor",
    "propagate_bwd": "(Tensor grad_h, Tensor x, Tensor gates, Tensor? input_weight, Tensor h, int direction, "
                     "int normalize, int chunk) -> (Tensor, Tensor, Tensor)",
    "propagate4_fwd": "(Tensor x, Tensor gates, Tensor? input_weight, int merge, int normalize, int chunk, "
                      "bool save) -> (Tensor, Tensor)",
    "propagate4_bwd": "(Tensor grad_out, Tensor x, Tensor gates, Tensor? input_weight, Tensor hs, int merge, "
                      "int normalize, int chunk) -> (Tensor, Tensor, Tensor)",
}

for _name, _schema in SCHEMAS.items():
    torch.library.define(f"spn::{_name}", _schema)


@torch.library.register_fake("spn::propagate_fwd")
def _propagate_fwd_fake(x, gates, input_weight, direction, normalize, chunk):
    return x.new_empty(x.shape)


def _grad_l_fake(x, input_weight):
    return x.new_empty((0,)) if input_weight is None else x.new_empty(input_weight.shape)


@torch.library.register_fake("spn::propagate_bwd")
def _propagate_bwd_fake(grad_h, x, gates, input_weight, h, direction, normalize, chunk):
    return x.new_empty(x.shape), x.new_empty(gates.shape), _grad_l_fake(x, input_weight)


@torch.library.register_fake("spn::propagate4_fwd")
def _propagate4_fwd_fake(x, gates, input_weight, merge, normalize, chunk, save):
    B, C, H, W = x.shape
    if merge == _MERGE_NONE:
        return x.new_empty((B, 4, C, H, W)), x.new_empty((0,))
    hs = x.new_empty((B, 4, C, H, W)) if save else x.new_empty((0,))
    return x.new_empty(x.shape), hs


@torch.library.register_fake("spn::propagate4_bwd")
def _propagate4_bwd_fake(grad_out, x, gates, input_weight, hs, merge, normalize, chunk):
    return x.new_empty(x.shape), x.new_empty(gates.shape), _grad_l_fake(x, input_weight)


def _setup1(ctx, inputs, output):
    x, gates, input_weight, direction, normalize, chunk = inputs
    ctx.save_for_backward(x, gates, input_weight, output)
    ctx.args = (direction, normalize, chunk)


def _backward1(ctx, grad_h):
    x, gates, input_weight, h = ctx.saved_tensors
    gx, gg, gl = torch.ops.spn.propagate_bwd(grad_h.contiguous(), x, gates, input_weight, h, *ctx.args)
    return gx, gg, (gl if input_weight is not None else None), None, None, None


def _setup4(ctx, inputs, output):
    x, gates, input_weight, merge, normalize, chunk, save = inputs
    out, hs = output
    if merge == _MERGE_NONE:
        hs = out  # the stacked directional maps are the output itself
    ctx.hs_missing = not save and merge != _MERGE_NONE
    ctx.save_for_backward(x, gates, input_weight, hs)
    ctx.args = (merge, normalize, chunk)


def _backward4(ctx, grad_out, grad_hs):
    if ctx.hs_missing:
        raise RuntimeError("spn::propagate4_fwd was run with save=False; it cannot be differentiated")
    x, gates, input_weight, hs = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(hs if ctx.args[0] == _MERGE_NONE else x)
    gx, gg, gl = torch.ops.spn.propagate4_bwd(grad_out.contiguous(), x, gates, input_weight, hs, *ctx.args)
    return gx, gg, (gl if input_weight is not None else None), None, None, None, None


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "spn: double backward (gradients of gradients) through the propagation kernels is not "
        "supported; use spn.ops.propagate_ref / propagate4_ref for higher-order derivatives"
    )


def _setup_none(ctx, inputs, output):
    pass


torch.library.register_autograd("spn::propagate_fwd", _backward1, setup_context=_setup1)
torch.library.register_autograd("spn::propagate_bwd", _no_double_backward, setup_context=_setup_none)
torch.library.register_autograd("spn::propagate4_bwd", _no_double_backward, setup_context=_setup_none)
torch.library.register_autograd("spn::propagate4_fwd", _backward4, setup_context=_setup4)
