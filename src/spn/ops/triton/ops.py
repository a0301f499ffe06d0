"""``torch.library`` registration of the Triton kernels: ``torch.ops.spn_triton.propagate_fwd`` /
``propagate_bwd``, with fake (shape-only) implementations and a registered autograd formula.

On CUDA they are ``torch.library.triton_op`` s whose kernels are launched through
``torch.library.wrap_triton``, so ``torch.compile`` traces into them. Under Triton's interpreter
(``TRITON_INTERPRET=1``, CPU tensors, used by the tests) the interpreted kernels cannot be traced,
so the same functions are registered as opaque ``torch.library.custom_op`` s; numbers, fake
implementations and autograd are identical.

One forward op serves both public functions: ``direction >= 0`` is :func:`spn.ops.propagate`
(gates ``(B, K, Cg, H, W)``), ``direction == -1`` is :func:`spn.ops.propagate4` (gates
``(B, 4, K, Cg, H, W)``, merged by ``merge``). It returns ``(out, hs, idx)``:

- ``out``: the result in the input dtype;
- ``hs``: the per-direction outputs in the accumulation dtype (float32 for 16-bit inputs),
  ``(B, C, H, W)`` or ``(B, 4, C, H, W)``, which the backward needs; empty when ``out`` itself
  is that tensor (single direction or ``merge="none"`` in float32/float64), since outputs of a
  custom op may not alias each other;
- ``idx``: for ``merge="max"``, the winning direction per node (int8), else empty.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch
import triton
from torch.library import custom_op, triton_op, wrap_triton

from .._validate import check_input_weight, check_pair
from . import kernels

NORM_CODES = {None: 0, "clip": 1, "always": 2, "gspn": 3}
MERGE_CODES = {"max": 1, "mean": 2, "sum": 3, "none": 4}  # 0: one direction, no merge

#: the most elements of a program's (channels x lanes) tile; longer lines get one channel
TILE = 2048
#: the longest scan line (lateral size) a program can hold
MAX_LINE = 1 << 16
#: chunks run on the grid's second axis, which CUDA limits to 65535 programs
MAX_CHUNKS = 65535
#: programs wanted per streaming multiprocessor before channel blocks are made wider
PROGRAMS_PER_SM = 4

INTERPRETING = type(kernels.scan_fwd_kernel).__name__ == "InterpretedFunction"


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _geometry(x: torch.Tensor, direction: int, chunk: int):
    """Tile sizes and grid: ``(CB, BLOCK, NCB, n_chunks, ndirs, chunk, num_warps)``.

    ``BLOCK`` lanes hold a scan line; ``CB`` channels share a program. The scan's parallelism is
    programs = batch x channel blocks x chunks x directions, so on a GPU ``CB`` shrinks until
    there are ``PROGRAMS_PER_SM`` programs per multiprocessor (or ``CB == 1``); wider blocks load
    shared gates once for more channels and cost the interpreter fewer steps.
    """
    B, C, H, W = x.shape
    if direction < 0:
        n, L, ndirs = max(H, W), max(H, W), 4
    else:
        n, L, ndirs = (H, W, 1) if direction < 2 else (W, H, 1)
    if n > MAX_LINE:
        raise ValueError(
            f"spn: scan lines of {n} pixels exceed the Triton kernel's limit of {MAX_LINE}; "
            "run such maps on the reference (SPN_BACKEND=reference)"
        )
    BLOCK = triton.next_power_of_2(n)
    chunk = L if chunk <= 0 else min(chunk, L)
    n_chunks = triton.cdiv(L, chunk)
    if n_chunks > MAX_CHUNKS:
        raise ValueError(f"spn: {n_chunks} chunks exceed the Triton kernel's grid limit of {MAX_CHUNKS}; "
                         f"use a larger chunk (scan lines per chunk) or the reference (SPN_BACKEND=reference)")
    CB = min(triton.next_power_of_2(C), max(1, TILE // BLOCK))
    if x.is_cuda:
        want = PROGRAMS_PER_SM * _sm_count(x.device.index if x.device.index is not None else
                                           torch.cuda.current_device())
        while CB > 1 and B * triton.cdiv(C, CB) * n_chunks * ndirs < want:
            CB //= 2
    NCB = triton.cdiv(C, CB)
    num_warps = max(1, min(16, (CB * BLOCK) // 128))  # about 4 elements of a tile per thread
    return CB, BLOCK, NCB, n_chunks, ndirs, chunk, num_warps


def _check_offsets(**tensors) -> None:
    """Offsets inside one batch item are 32-bit in the kernels: say so clearly, never overflow."""
    for name, t in tensors.items():
        if t is None:
            continue
        span = sum((size - 1) * abs(stride) for size, stride in zip(t.shape[1:], t.stride()[1:]))
        if span >= 2**31:
            raise ValueError(f"spn: {name} spans {span} elements per batch item, more than the Triton kernel's "
                             f"32-bit offsets hold; split the batch item or run on the reference "
                             f"(SPN_BACKEND=reference)")


def _strides(t: Optional[torch.Tensor], n: int, insert_dir: bool = False):
    """Strides of ``t`` as ``n`` ints; ``insert_dir`` puts a 0 stride for the (absent)
    direction axis after the batch axis; a missing tensor gives zeros."""
    if t is None:
        return [0] * n
    s = list(t.stride())
    if insert_dir:
        s = [s[0], 0, *s[1:]]
    assert len(s) == n, (t.shape, n)
    return s


def _fwd_impl(x: torch.Tensor, gates: torch.Tensor, input_weight: Optional[torch.Tensor], direction: int,
              normalize: int, chunk: int, merge: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    four = direction < 0
    check_pair(x, gates, n_dirs=4 if four else None)  # the public functions checked already; direct
    check_input_weight(x, input_weight, n_dirs=4 if four else None)  # callers of the op get the same errors
    B, C, H, W = x.shape
    gdim = 3 if four else 2  # the Cg axis of gates
    K, Cg = gates.shape[gdim - 1], gates.shape[gdim]
    acc = _acc_dtype(x.dtype)
    CB, BLOCK, NCB, n_chunks, ndirs, chunk, num_warps = _geometry(x, direction, chunk)
    _check_offsets(x=x, gates=gates, input_weight=input_weight)
    hs = torch.empty((B, 4, C, H, W) if four else (B, C, H, W), dtype=acc, device=x.device)
    Cl = 0 if input_weight is None else input_weight.shape[-3]
    wrap_triton(kernels.scan_fwd_kernel)[(B * NCB, n_chunks, ndirs)](
        x, gates, x if input_weight is None else input_weight, hs,
        C, H, W, NCB, max(direction, 0), chunk,
        *x.stride(),
        *_strides(gates, 6, insert_dir=not four),
        *_strides(input_weight, 5, insert_dir=not four),
        *_strides(hs, 5, insert_dir=not four),
        K=K, G_SHARED=Cg == 1 and C > 1, HAS_L=input_weight is not None, L_SHARED=Cl == 1 and C > 1,
        NORM=normalize, CB=CB, BLOCK=BLOCK, num_warps=num_warps, num_stages=1,
    )
    none_hs = x.new_empty((0,), dtype=acc)
    no_idx = x.new_empty((0,), dtype=torch.int8)
    if not four or merge == MERGE_CODES["none"]:
        if acc == x.dtype:
            return hs, none_hs, no_idx
        return hs.to(x.dtype), hs, no_idx
    out = torch.empty((B, C, H, W), dtype=x.dtype, device=x.device)
    idx = torch.empty((B, C, H, W), dtype=torch.int8, device=x.device) if merge == MERGE_CODES["max"] else no_idx
    total, block = B * C * H * W, 1024
    wrap_triton(kernels.merge_fwd_kernel)[(triton.cdiv(total, block),)](
        hs, out, out if idx.numel() == 0 else idx, C * H * W, total, MERGE=merge, BLOCK=block, num_warps=4,
    )
    return out, hs, idx


def _bwd_impl(grad_out: torch.Tensor, x: torch.Tensor, gates: torch.Tensor, input_weight: Optional[torch.Tensor],
              hs: torch.Tensor, idx: torch.Tensor, direction: int, normalize: int, chunk: int,
              merge: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, C, H, W = x.shape
    four = direction < 0
    gdim = 3 if four else 2
    K, Cg = gates.shape[gdim - 1], gates.shape[gdim]
    acc = _acc_dtype(x.dtype)
    CB, BLOCK, NCB, n_chunks, ndirs, chunk, num_warps = _geometry(x, direction, chunk)
    _check_offsets(grad_out=grad_out, x=x, gates=gates, input_weight=input_weight, hs=hs)
    g_shared = Cg == 1 and C > 1
    Cl = 0 if input_weight is None else input_weight.shape[-3]
    l_shared = Cl == 1 and C > 1
    # shared gates / input weight are summed over channels: inside a program over its channel block,
    # then across blocks by atomic adds, or, in deterministic mode, through one partial per block
    atomic = NCB > 1 and (g_shared or l_shared) and not torch.are_deterministic_algorithms_enabled()
    n_shared = 1 if atomic else NCB
    lead = (B, 4) if four else (B,)
    gx = torch.empty((*lead, C, H, W), dtype=acc, device=x.device)  # per-direction partials
    new = torch.zeros if atomic else torch.empty
    gg = new((*lead, K, n_shared if g_shared else Cg, H, W), dtype=acc, device=x.device)
    gl = (x.new_empty((0,), dtype=acc) if input_weight is None
          else new((*lead, n_shared if l_shared else Cl, H, W), dtype=acc, device=x.device))
    n_prog = B * NCB * n_chunks * ndirs
    scratch = torch.empty((n_prog * 4 * CB * BLOCK if K == 3 else 1,), dtype=acc, device=x.device)
    merged = four and merge != MERGE_CODES["none"]
    wrap_triton(kernels.scan_bwd_kernel)[(B * NCB, n_chunks, ndirs)](
        grad_out, x if idx.numel() == 0 else idx, x, gates, x if input_weight is None else input_weight, hs,
        gx, gg, gx if input_weight is None else gl, scratch,
        C, H, W, NCB, max(direction, 0), chunk,
        *_strides(grad_out, 5, insert_dir=not four or merged),
        *_strides(idx if idx.numel() else None, 4),
        *x.stride(),
        *_strides(gates, 6, insert_dir=not four),
        *_strides(input_weight, 5, insert_dir=not four),
        *_strides(hs, 5, insert_dir=not four),
        *_strides(gx, 5, insert_dir=not four),
        *_strides(gg, 6, insert_dir=not four),
        *_strides(gl if input_weight is not None else None, 5, insert_dir=not four),
        K=K, G_SHARED=g_shared, HAS_L=input_weight is not None, L_SHARED=l_shared, ATOMIC=atomic,
        NORM=normalize, MERGE=merge if four else 0, CB=CB, BLOCK=BLOCK, num_warps=num_warps, num_stages=1,
    )
    if four:
        gx = gx.sum(dim=1)
    if g_shared and n_shared > 1:
        gg = gg.sum(dim=gdim, keepdim=True)
    if l_shared and n_shared > 1:
        gl = gl.sum(dim=-3, keepdim=True)
    return gx.to(x.dtype), gg.to(gates.dtype), gl.to(x.dtype)


# --------------------------------------------------------------------------- registration

if INTERPRETING:
    def _register(name, fn):
        return custom_op(name, fn, mutates_args=())
else:
    def _register(name, fn):
        return triton_op(name, fn, mutates_args=())

propagate_fwd = _register("spn_triton::propagate_fwd", _fwd_impl)
propagate_bwd = _register("spn_triton::propagate_bwd", _bwd_impl)


@propagate_fwd.register_fake
def _fwd_fake(x, gates, input_weight, direction, normalize, chunk, merge):
    B, C, H, W = x.shape
    acc = _acc_dtype(x.dtype)
    no_hs, no_idx = x.new_empty((0,), dtype=acc), x.new_empty((0,), dtype=torch.int8)
    if direction >= 0 or merge == MERGE_CODES["none"]:
        shape = (B, C, H, W) if direction >= 0 else (B, 4, C, H, W)
        if acc == x.dtype:
            return x.new_empty(shape), no_hs, no_idx
        return x.new_empty(shape), x.new_empty(shape, dtype=acc), no_idx
    idx = x.new_empty((B, C, H, W), dtype=torch.int8) if merge == MERGE_CODES["max"] else no_idx
    return x.new_empty((B, C, H, W)), x.new_empty((B, 4, C, H, W), dtype=acc), idx


@propagate_bwd.register_fake
def _bwd_fake(grad_out, x, gates, input_weight, hs, idx, direction, normalize, chunk, merge):
    gl = x.new_empty((0,)) if input_weight is None else x.new_empty(input_weight.shape)
    return x.new_empty(x.shape), gates.new_empty(gates.shape), gl


def _setup_context(ctx, inputs, output):
    x, gates, input_weight, direction, normalize, chunk, merge = inputs
    out, hs, idx = output
    ctx.mark_non_differentiable(hs, idx)
    ctx.h_is_out = hs.numel() == 0
    ctx.save_for_backward(x, gates, input_weight, None if ctx.h_is_out else hs, out if ctx.h_is_out else None, idx)
    ctx.args = (direction, normalize, chunk, merge)


def _backward(ctx, grad_out, _grad_hs, _grad_idx):
    x, gates, input_weight, hs, out, idx = ctx.saved_tensors
    h = out if ctx.h_is_out else hs
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    gx, gg, gl = propagate_bwd(grad_out, x, gates, input_weight, h, idx, *ctx.args)
    return gx, gg, (gl if input_weight is not None else None), None, None, None, None


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "spn: double backward (gradients of gradients) through the Triton propagation kernel is not "
        "supported; use spn.ops.propagate_ref / propagate4_ref for higher-order derivatives"
    )


def _setup_none(ctx, inputs, output):
    pass


propagate_fwd.register_autograd(_backward, setup_context=_setup_context)
propagate_bwd.register_autograd(_no_double_backward, setup_context=_setup_none)


# --------------------------------------------------------------------------- entry points


def _device_guard(x: torch.Tensor):
    """Launch on the tensors' GPU, not the current one."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def propagate(x, gates, direction: int, *, normalize=None, input_weight=None, chunk=None) -> torch.Tensor:
    """One direction on the Triton kernels; arguments already validated by :func:`spn.ops.propagate`."""
    with _device_guard(x):
        out, _, _ = propagate_fwd(x, gates, input_weight, int(direction), NORM_CODES[normalize], chunk or 0, 0)
    return out


def propagate4(x, gates, merge: str = "max", *, normalize=None, input_weight=None, chunk=None) -> torch.Tensor:
    """Four directions merged on the Triton kernels; arguments already validated."""
    with _device_guard(x):
        out, _, _ = propagate_fwd(x, gates, input_weight, -1, NORM_CODES[normalize], chunk or 0, MERGE_CODES[merge])
    return out
