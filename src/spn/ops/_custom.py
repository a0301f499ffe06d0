"""Fake (meta) implementations and autograd formulas of the ``torch.ops.spn`` custom ops.

Imported by :mod:`spn.ops._backend` once ``spn._C`` has registered the ops' schemas and CPU
kernels. The backward of each op is its own custom op (a reverse sweep) that needs only the
forward output, not per-step autograd state.
"""
from __future__ import annotations

import torch


@torch.library.register_fake("spn::propagate_fwd")
def _propagate_fwd_fake(x, gates, direction):
    return x.new_empty(x.shape)


@torch.library.register_fake("spn::propagate_bwd")
def _propagate_bwd_fake(grad_h, x, gates, h, direction):
    return x.new_empty(x.shape), x.new_empty(gates.shape)


@torch.library.register_fake("spn::propagate4_fwd")
def _propagate4_fwd_fake(x, gates, merge, save):
    hs = x.new_empty((4, *x.shape)) if save else x.new_empty((0,))
    return x.new_empty(x.shape), hs


@torch.library.register_fake("spn::propagate4_bwd")
def _propagate4_bwd_fake(grad_out, x, gates, hs, merge):
    return x.new_empty(x.shape), x.new_empty(gates.shape)


def _setup1(ctx, inputs, output):
    x, gates, direction = inputs
    ctx.save_for_backward(x, gates, output)
    ctx.direction = direction


def _backward1(ctx, grad_h):
    x, gates, h = ctx.saved_tensors
    gx, gg = torch.ops.spn.propagate_bwd(grad_h, x, gates, h, ctx.direction)
    return gx, gg, None


def _setup4(ctx, inputs, output):
    x, gates, merge, save = inputs
    out, hs = output
    if not save:
        ctx.hs_missing = True
    else:
        ctx.hs_missing = False
    ctx.save_for_backward(x, gates, hs)
    ctx.merge = merge


def _backward4(ctx, grad_out, grad_hs):
    if ctx.hs_missing:
        raise RuntimeError("spn::propagate4_fwd was run with save=False; it cannot be differentiated")
    x, gates, hs = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(x)
    gx, gg = torch.ops.spn.propagate4_bwd(grad_out, x, gates, hs, ctx.merge)
    return gx, gg, None, None


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "spn: double backward (gradients of gradients) through the compiled propagation kernel is not "
        "supported; use spn.ops.propagate_ref / propagate4_ref for higher-order derivatives"
    )


def _setup_none(ctx, inputs, output):
    pass


torch.library.register_autograd("spn::propagate_fwd", _backward1, setup_context=_setup1)
torch.library.register_autograd("spn::propagate_bwd", _no_double_backward, setup_context=_setup_none)
torch.library.register_autograd("spn::propagate4_bwd", _no_double_backward, setup_context=_setup_none)
torch.library.register_autograd("spn::propagate4_fwd", _backward4, setup_context=_setup4)
