"""The CUDA kernels of the ``torch.ops.spn`` propagation ops, in Triton.

The ops' schemas, fake implementations and autograd formulas are defined once, for every device,
in :mod:`spn.ops._custom`; this module registers the Triton implementations as their ``cuda``
kernels (whether or not this machine has a GPU), so the dispatcher picks them for CUDA tensors
and the C++ kernels for CPU ones. As for a ``torch.library.triton_op``, a rule for
``FunctionalTensorMode`` lets ``torch.compile`` trace into the implementations on CUDA
tensors, where the kernels appear as ``wrap_triton`` launches.

Under Triton's interpreter (``TRITON_INTERPRET=1`` set before triton is imported) with
``SPN_BACKEND=triton``, the same implementations are also registered as the ops' CPU kernels,
replacing the C++ ones in that process: that is how the tests run the Triton kernels, through
the very ops, fakes and autograd formulas that CUDA tensors use, on a machine without a GPU.

The four-direction forward scans into ``hs`` ``(B, 4, C, H, W)`` (accumulation dtype: float32
for 16-bit inputs), then merges; for ``merge="max"`` the backward recomputes the winning direction
per node from ``hs`` (one elementwise launch) rather than keeping it from the forward.
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Optional

import torch
import triton
from torch._library.triton import set_wrap_triton_enabled, triton_ops_to_kernels
from torch._subclasses.functional_tensor import FunctionalTensorMode
from torch.library import wrap_triton

from .. import _custom  # noqa: F401  (defines the ops the kernels are registered on)
from .._codes import MERGE_CODES
from .._validate import check_input_weight, check_pair
from . import kernels

#: the most elements of a program's (channels x lanes) tile; longer lines get one channel
TILE = 2048
#: the longest scan line (lateral size) a program can hold
MAX_LINE = 1 << 16
#: chunks run on the grid's second axis, which CUDA limits to 65535 programs
MAX_CHUNKS = 65535
#: programs wanted per streaming multiprocessor before channel blocks are made wider
PROGRAMS_PER_SM = 4

INTERPRETING = type(kernels.scan_fwd_kernel).__name__ == "InterpretedFunction"

_MAX, _NONE = MERGE_CODES["max"], MERGE_CODES["none"]
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


def _scan(x: torch.Tensor, gates: torch.Tensor, input_weight: Optional[torch.Tensor], direction: int,
          normalize: int, chunk: int) -> torch.Tensor:
    """The scan: ``hs`` ``(B, C, H, W)`` for one direction, ``(B, 4, C, H, W)`` for
    ``direction == -1`` (all four), in the accumulation dtype."""
    four = direction < 0
    check_pair(x, gates, n_dirs=4 if four else None)  # the public functions checked already; direct
    check_input_weight(x, input_weight, n_dirs=4 if four else None)  # callers of the ops get the same errors
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
    return hs


def _merge(hs: torch.Tensor, merge: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``hs`` ``(B, 4, C, H, W)`` merged node-wise into ``(B, C, H, W)`` of ``dtype``, and for
    ``max`` the winning direction per node (int8; else empty)."""
    hs = hs.contiguous()
    B, _, C, H, W = hs.shape
    out = torch.empty((B, C, H, W), dtype=dtype, device=hs.device)
    idx = (torch.empty((B, C, H, W), dtype=torch.int8, device=hs.device) if merge == _MAX
           else hs.new_empty((0,), dtype=torch.int8))
    total, block = B * C * H * W, 1024
    wrap_triton(kernels.merge_fwd_kernel)[(triton.cdiv(total, block),)](
        hs, out, out if idx.numel() == 0 else idx, C * H * W, total, MERGE=merge, BLOCK=block, num_warps=4,
    )
    return out, idx


def _adjoint(grad_out: torch.Tensor, x: torch.Tensor, gates: torch.Tensor, input_weight: Optional[torch.Tensor],
             hs: torch.Tensor, idx: torch.Tensor, direction: int, normalize: int, chunk: int,
             merge: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reverse sweep: gradients of x, the raw gates and the input weight. ``direction == -1``:
    all four, ``grad_out`` of the merged output (``(B, 4, C, H, W)`` for ``merge="none"``)."""
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
    merged = four and merge != _NONE
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
        NORM=normalize, MERGE=merge if four else _NONE, CB=CB, BLOCK=BLOCK, num_warps=num_warps, num_stages=1,
    )
    if four:
        gx = gx.sum(dim=1)
    if g_shared and n_shared > 1:
        gg = gg.sum(dim=gdim, keepdim=True)
    if l_shared and n_shared > 1:
        gl = gl.sum(dim=-3, keepdim=True)
    return gx.to(x.dtype), gg.to(gates.dtype), gl.to(x.dtype)


# --------------------------------------------------------------------------- the ops' kernels


def propagate_fwd(x, gates, input_weight, direction: int, normalize: int, chunk: int) -> torch.Tensor:
    """``spn::propagate_fwd`` (one direction, ``0 <= direction < 4``)."""
    if not 0 <= direction < 4:
        raise ValueError(f"spn: direction must be in 0..3, got {direction}")
    return _scan(x, gates, input_weight, direction, normalize, chunk).to(x.dtype)


def propagate_bwd(grad_h, x, gates, input_weight, h, direction: int, normalize: int, chunk: int):
    """``spn::propagate_bwd``: gradients of x, the raw gates and the input weight (empty if none)."""
    if not 0 <= direction < 4:
        raise ValueError(f"spn: direction must be in 0..3, got {direction}")
    no_idx = x.new_empty((0,), dtype=torch.int8)
    return _adjoint(grad_h, x, gates, input_weight, h, no_idx, direction, normalize, chunk, _NONE)


def propagate4_fwd(x, gates, input_weight, merge: int, normalize: int, chunk: int, save: bool):
    """``spn::propagate4_fwd``: ``(out, hs)``; ``hs`` ``(B, 4, C, H, W)`` when ``save`` and
    ``merge`` is not ``"none"``, else empty."""
    hs = _scan(x, gates, input_weight, -1, normalize, chunk)
    if merge == _NONE:
        return hs.to(x.dtype), x.new_empty((0,))
    out, _ = _merge(hs, merge, x.dtype)
    return out, (hs.to(x.dtype) if save else x.new_empty((0,)))


def propagate4_bwd(grad_out, x, gates, input_weight, hs, merge: int, normalize: int, chunk: int):
    """``spn::propagate4_bwd``: gradients of x, the raw gates and the input weight (empty if none)."""
    B, C, H, W = x.shape
    if tuple(hs.shape) != (B, 4, C, H, W):
        raise ValueError(f"spn: hs must be the directional maps (B, 4, C, H, W) = {(B, 4, C, H, W)}, got "
                         f"{tuple(hs.shape)}")
    idx = _merge(hs, _MAX, hs.dtype)[1] if merge == _MAX else x.new_empty((0,), dtype=torch.int8)
    return _adjoint(grad_out, x, gates, input_weight, hs, idx, -1, normalize, chunk, merge)


IMPLS = {"propagate_fwd": propagate_fwd, "propagate_bwd": propagate_bwd,
         "propagate4_fwd": propagate4_fwd, "propagate4_bwd": propagate4_bwd}
#: the kernels each implementation launches (their sources enter torch.compile's cache keys)
LAUNCHES = {"propagate_fwd": [kernels.scan_fwd_kernel], "propagate_bwd": [kernels.scan_bwd_kernel],
            "propagate4_fwd": [kernels.scan_fwd_kernel, kernels.merge_fwd_kernel],
            "propagate4_bwd": [kernels.merge_fwd_kernel, kernels.scan_bwd_kernel]}


def _device_guard(x: torch.Tensor):
    """Launch on the tensors' GPU, not the current one."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _eager(fn):
    """The kernel the dispatcher calls: real tensors, so the launches need no HOP dispatch."""
    @functools.wraps(fn)
    def kernel(*args, **kwargs):
        first = args[0] if args else next(iter(kwargs.values()))  # a tensor: the first argument of each op
        with set_wrap_triton_enabled(False), _device_guard(first):
            return fn(*args, **kwargs)

    return kernel


def _functional_decomp(fn):
    """Under ``FunctionalTensorMode`` (AOTDispatcher, so torch.compile), CUDA tensors decompose
    into the implementation, whose launches become ``wrap_triton`` nodes Inductor can inline (as
    ``torch.library.triton_op`` does); any other device keeps the op as one opaque node."""
    def decomp(mode, op, types, args, kwargs):
        from torch.export._trace import custom_triton_ops_decomposition_disabled

        if args[0].device.type != "cuda" or custom_triton_ops_decomposition_disabled():
            return mode.__torch_dispatch__(op, types, args, kwargs)
        if any(not issubclass(t, (torch._subclasses.FakeTensor, torch._subclasses.functional_tensor.FunctionalTensor))
               and t is not torch.Tensor for t in types):
            return NotImplemented
        with mode:
            return fn(*args, **kwargs)

    return decomp


def _forced_interpreter_on_cpu() -> bool:
    from .. import _backend

    return INTERPRETING and _backend.forced_triton()


def _register() -> None:
    from .. import _backend

    _backend._load()  # the C++ CPU kernels too (a whole family), and first: these may replace them, not the reverse
    on_cpu = _forced_interpreter_on_cpu()
    for name, fn in IMPLS.items():
        qualname = f"spn::{name}"
        torch.library.register_kernel(qualname, "cuda", _eager(fn))
        torch.library.register_torch_dispatch(qualname, FunctionalTensorMode, _functional_decomp(fn))
        triton_ops_to_kernels[qualname] = LAUNCHES[name]
        if on_cpu:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Oo]verrid")
                torch.library.register_kernel(qualname, "cpu", _eager(fn))


_register()
