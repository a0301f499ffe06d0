"""Triton kernels of the version-2 propagation operator (``docs/spec/propagation.md``).

Only imported when ``triton`` imports (see :mod:`spn.ops.triton`). With ``TRITON_INTERPRET=1``
set before ``triton`` is imported, the same kernels run on CPU tensors in Triton's interpreter,
which is how CI tests them.

Layout of the work (forward and backward alike):

- one program per (batch, block of ``CB`` channels) x chunk x direction; chunks scan in
  parallel, and so do the four directions of ``propagate4``;
- inside a program, a loop over the scan lines of its chunk (one launch per scan, never one per
  line); a scan line is a ``(CB, BLOCK)`` tile, ``BLOCK >= n`` lanes (the line length);
- three-way neighbours of the previous line are read back from memory at lateral offsets
  ``k - 1`` / ``k + 1`` after ``tl.debug_barrier()`` (the forward reads its own output ``hs``;
  the backward a two-line scratch ring), the centre neighbour stays in registers;
- any strides: every tensor comes with its strides, nothing is made contiguous.

Numerics follow the reference (``spn.ops.reference``): float32 accumulation for 16-bit inputs
(the dtype of ``hs``), invalid neighbours' gates dropped (never loaded for ``normalize`` None/"gspn", masked
out of every sum otherwise), first lines' raw gates never read, the recurrence evaluated literally
as ``(1 - sum g) * x + sum g * h_prev``, and comparisons written so that a NaN propagates
(``where(s < 1, 1, s)`` is ``clamp(s, min=1)`` with NaN kept).

Codes (``constexpr``): ``NORM`` and ``MERGE`` take the codes of :mod:`spn.ops._codes` (the
table the C++ kernels share); a single direction's backward runs with ``MERGE`` = none (the
gradient passes through unchanged).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .. import normalize as _normalize_mod
from .._codes import MERGE_CODES, NORMALIZE_CODES

# floors of the normalisation divisors: the numbers of spn.ops.normalize (Triton reads globals
# only as constexpr)
CLIP_FLOOR = tl.constexpr(1.0)
ALWAYS_EPS = tl.constexpr(_normalize_mod.ALWAYS_EPS)
GSPN_EPS = tl.constexpr(_normalize_mod.GSPN_EPS)
# the codes of spn.ops._codes
NORM_NONE = tl.constexpr(NORMALIZE_CODES[None])
NORM_CLIP = tl.constexpr(NORMALIZE_CODES["clip"])
NORM_ALWAYS = tl.constexpr(NORMALIZE_CODES["always"])
MERGE_MAX = tl.constexpr(MERGE_CODES["max"])
MERGE_MEAN = tl.constexpr(MERGE_CODES["mean"])


@triton.jit
def _geometry(d, H, W, chunk, pid_chunk):
    """Scan geometry of direction ``d`` for the chunk of this program."""
    horizontal = d < 2
    L = tl.where(horizontal, W, H)  # number of scan lines
    n = tl.where(horizontal, H, W)  # line length
    t0 = pid_chunk * chunk
    t1 = tl.minimum(t0 + chunk, L)
    n = tl.where(t0 < L, n, 0)  # a program past the last chunk of this direction does nothing
    return horizontal, L, n, t0, t1


@triton.jit
def _program(C, H, W, NCB, dir0, chunk, CB: tl.constexpr, BLOCK: tl.constexpr):
    """What this program scans: batch ``b``, channel block ``cblk`` (first channel ``c0``),
    direction slot ``ds`` and direction ``d``, its scan steps ``t0 <= t < t1`` out of ``L``,
    the tile's channel / lane index vectors ``cl`` ``(CB, 1)`` and ``ks`` ``(1, BLOCK)``, and
    masks: ``lane`` (k < n), ``m`` (the tile), ``v0`` / ``v2`` (slot 0 / 2 has a neighbour)."""
    pid_bc = tl.program_id(0)
    dslot = tl.program_id(2)
    cblk = pid_bc % NCB
    b = (pid_bc // NCB).to(tl.int64)  # 64-bit: the batch offset is the only one that may pass 2**31
    c0 = cblk * CB
    d = dir0 + dslot
    horizontal, L, n, t0, t1 = _geometry(d, H, W, chunk, tl.program_id(1))
    cl = tl.arange(0, CB)[:, None]
    ks = tl.arange(0, BLOCK)[None, :]
    lane = ks < n
    m = (c0 + cl < C) & lane
    return b, cblk, c0, dslot.to(tl.int64), d, horizontal, L, t0, t1, cl, ks, lane, m, ks >= 1, ks + 1 < n


@triton.jit
def _line_of(t, L, d):
    """Index (row or column) of scan step ``t`` in direction ``d``."""
    return tl.where(d % 2 == 1, L - 1 - t, t)


@triton.jit
def _prev_of(line, d):
    """Index of the previous scan line (the one scanned just before ``line``)."""
    return tl.where(d % 2 == 1, line + 1, line - 1)


@triton.jit
def _ls(horizontal, sh, sw):
    """(line stride, lateral stride) of a tensor with row stride ``sh`` and column stride ``sw``."""
    return tl.where(horizontal, sw, sh), tl.where(horizontal, sh, sw)


@triton.jit
def _sign(r):
    return tl.where(r > 0, 1.0, tl.where(r < 0, -1.0, tl.where(r == 0, 0.0, r)))


@triton.jit
def _abs_sum(r0, r1, r2, K: tl.constexpr):
    """``sum_j |r_j|`` over all ``K`` slots ("clip" and "always")."""
    if K == 3:
        return tl.abs(r0) + tl.abs(r1) + tl.abs(r2)
    return tl.abs(r1)


@triton.jit
def _sigmoids(r0, r1, r2, v0, v2, K: tl.constexpr):
    """``q_j = sigmoid(r_j)`` of the valid slots (others 0) and their sum ("gspn")."""
    q1 = tl.sigmoid(r1)
    if K == 3:
        q0 = tl.where(v0, tl.sigmoid(r0), 0.0)
        q2 = tl.where(v2, tl.sigmoid(r2), 0.0)
        return q0, q1, q2, q0 + q1 + q2
    return q1, q1, q1, q1


@triton.jit
def _normalize(r0, r1, r2, v0, v2, K: tl.constexpr, NORM: tl.constexpr):
    """Normalised gates of the valid slots (invalid slots: 0) and the divisor.

    ``r0, r2`` are the raw gates of slots 0 and 2 (ignored when ``K == 1``), ``r1`` of the centre
    slot (the only slot when ``K == 1``); ``v0, v2`` say where slots 0 and 2 have a neighbour.
    For ``NORM`` 1 and 2 the raw gates of every slot were loaded (the sum runs over all ``K``
    slots, valid or not); for 0 and 3 only valid slots were loaded (the others are 0 and never
    used, so a NaN there is never read).
    """
    if NORM == NORM_NONE:
        g0 = r0
        g1 = r1
        g2 = r2
        den = r1  # unused
    elif NORM == NORM_CLIP or NORM == NORM_ALWAYS:
        s = _abs_sum(r0, r1, r2, K)
        if NORM == NORM_CLIP:
            den = tl.where(s < CLIP_FLOOR, CLIP_FLOOR, s)
        else:
            den = tl.where(s < ALWAYS_EPS, ALWAYS_EPS, s)
        g1 = r1 / den
        if K == 3:
            g0 = tl.where(v0, r0 / den, 0.0)
            g2 = tl.where(v2, r2 / den, 0.0)
        else:
            g0 = r0
            g2 = r2
    else:
        q0, q1, q2, s = _sigmoids(r0, r1, r2, v0, v2, K)
        den = tl.where(s < GSPN_EPS, GSPN_EPS, s)
        g1 = q1 / den
        if K == 3:
            g0 = q0 / den
            g2 = q2 / den
        else:
            g0 = r0
            g2 = r2
    return g0, g1, g2, den


@triton.jit
def _normalize_bwd(dg0, dg1, dg2, r0, r1, r2, g0, g1, g2, den, v0, v2, K: tl.constexpr, NORM: tl.constexpr):
    """Gradients of the raw gates from those of the normalised gates (``dg`` of invalid slots: 0)."""
    if NORM == NORM_NONE:
        return dg0, dg1, dg2
    if K == 3:
        tot = dg0 * g0 + dg1 * g1 + dg2 * g2
    else:
        tot = dg1 * g1
    if NORM == NORM_CLIP or NORM == NORM_ALWAYS:
        if NORM == NORM_CLIP:
            floor = CLIP_FLOOR
        else:
            floor = ALWAYS_EPS
        s = _abs_sum(r0, r1, r2, K)
        # d den / d s = 1 where the clamp passes s through (s >= floor), else 0
        tot = tl.where(s >= floor, tot, 0.0)
        dr1 = (dg1 - tot * _sign(r1)) / den
        if K == 3:
            dr0 = (dg0 - tot * _sign(r0)) / den
            dr2 = (dg2 - tot * _sign(r2)) / den
        else:
            dr0 = dg0
            dr2 = dg2
        return dr0, dr1, dr2
    # gspn: g_j = q_j / den, den = max(S, eps), q_j = sigmoid(r_j) and S = sum q_j over valid slots
    q0, q1, q2, s = _sigmoids(r0, r1, r2, v0, v2, K)
    tot = tl.where(s >= GSPN_EPS, tot, 0.0)
    dr1 = (dg1 - tot) / den * (1.0 - q1) * q1
    if K == 3:
        dr0 = tl.where(v0, (dg0 - tot) / den * (1.0 - q0) * q0, 0.0)
        dr2 = tl.where(v2, (dg2 - tot) / den * (1.0 - q2) * q2, 0.0)
    else:
        dr0 = dg0
        dr2 = dg2
    return dr0, dr1, dr2


@triton.jit
def _load_raw(gp, go, sgk, gm, v0, v2, K: tl.constexpr, NORM: tl.constexpr, ACC: tl.constexpr):
    """Raw gates of one line (``gp``: the line's base pointer, ``go``: tile offsets): all slots for
    clip/always, valid slots only otherwise."""
    if K == 3:
        if NORM == NORM_CLIP or NORM == NORM_ALWAYS:
            r0 = tl.load(gp + go, mask=gm, other=0.0).to(ACC)
            r2 = tl.load(gp + 2 * sgk + go, mask=gm, other=0.0).to(ACC)
        else:
            r0 = tl.load(gp + go, mask=gm & v0, other=0.0).to(ACC)
            r2 = tl.load(gp + 2 * sgk + go, mask=gm & v2, other=0.0).to(ACC)
        r1 = tl.load(gp + sgk + go, mask=gm, other=0.0).to(ACC)
    else:
        r1 = tl.load(gp + go, mask=gm, other=0.0).to(ACC)
        r0 = r1
        r2 = r1
    return r0, r1, r2


@triton.jit
def scan_fwd_kernel(
    x_ptr, g_ptr, l_ptr, hs_ptr,
    C, H, W, NCB, dir0, chunk,
    sxb, sxc, sxh, sxw,
    sgb, sgd, sgk, sgc, sgh, sgw,
    slb, sld, slc, slh, slw,
    shb, shd, shc, shh, shw,
    K: tl.constexpr, G_SHARED: tl.constexpr, HAS_L: tl.constexpr, L_SHARED: tl.constexpr,
    NORM: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr,
):
    """Scan one chunk of one direction for ``CB`` channels, writing ``h`` to ``hs``.

    ``hs`` is ``(B, ndirs, C, H, W)`` in the accumulation dtype (``shd`` is unused when
    ``ndirs == 1``); the direction is ``dir0 + program_id(2)``.
    """
    ACC = hs_ptr.dtype.element_ty  # the accumulation dtype: float32, or float64 for float64 inputs
    b, cblk, c0, ds, d, horizontal, L, t0, t1, cl, ks, lane, m, v0, v2 = _program(
        C, H, W, NCB, dir0, chunk, CB, BLOCK)

    # per-program scalar base pointers (64-bit) and 32-bit tile offsets
    x_l, x_k = _ls(horizontal, sxh, sxw)
    g_l, g_k = _ls(horizontal, sgh, sgw)
    l_l, l_k = _ls(horizontal, slh, slw)
    h_l, h_k = _ls(horizontal, shh, shw)
    xp = x_ptr + b * sxb + c0 * sxc
    xo = cl * sxc + ks * x_k
    hp = hs_ptr + b * shb + ds * shd + c0 * shc
    ho = cl * shc + ks * h_k
    if G_SHARED:
        gp = g_ptr + b * sgb + ds * sgd
        go = ks * g_k  # (1, BLOCK): one gate map for all channels
        gm = lane
    else:
        gp = g_ptr + b * sgb + ds * sgd + c0 * sgc
        go = cl * sgc + ks * g_k
        gm = m
    if HAS_L:
        if L_SHARED:
            lp = l_ptr + b * slb + ds * sld
            lo = cl * 0 + ks * l_k
        else:
            lp = l_ptr + b * slb + ds * sld + c0 * slc
            lo = cl * slc + ks * l_k

    # first line of the chunk: h = x (or l * x); its gates are never read
    line = _line_of(t0, L, d)
    xv = tl.load(xp + line * x_l + xo, mask=m, other=0.0).to(ACC)
    if HAS_L:
        h = tl.load(lp + line * l_l + lo, mask=m, other=0.0).to(ACC) * xv
    else:
        h = xv
    tl.store(hp + line * h_l + ho, h, mask=m)
    tl.debug_barrier()

    for t in range(t0 + 1, t1):
        line = _line_of(t, L, d)
        xv = tl.load(xp + line * x_l + xo, mask=m, other=0.0).to(ACC)
        r0, r1, r2 = _load_raw(gp + line * g_l, go, sgk, gm, v0, v2, K, NORM, ACC)
        g0, g1, g2, den = _normalize(r0, r1, r2, v0, v2, K, NORM)
        if K == 3:
            # the lateral neighbours of the previous line, written by other threads before the barrier
            hprev = hp + _prev_of(line, d) * h_l
            h_lo = tl.load(hprev - h_k + ho, mask=m & v0, other=0.0)
            h_hi = tl.load(hprev + h_k + ho, mask=m & v2, other=0.0)
            s = g0 + g1 + g2
            acc = g0 * h_lo + g1 * h + g2 * h_hi
        else:
            s = g1
            acc = g1 * h
        if HAS_L:
            h = tl.load(lp + line * l_l + lo, mask=m, other=0.0).to(ACC) * xv + acc
        else:
            h = (1.0 - s) * xv + acc
        tl.store(hp + line * h_l + ho, h, mask=m)
        tl.debug_barrier()


@triton.jit
def merge_fwd_kernel(hs_ptr, out_ptr, idx_ptr, CHW, total, MERGE: tl.constexpr, BLOCK: tl.constexpr):
    """Node-wise merge of ``hs`` ``(B, 4, C, H, W)`` into ``out`` ``(B, C, H, W)`` (both
    contiguous). ``max``: ``torch.max(dim)`` semantics (the first NaN, else the first maximum),
    its index written to ``idx`` (int8) for the backward."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < total
    b = i // CHW
    r = i % CHW
    base = hs_ptr + b * 4 * CHW + r
    h0 = tl.load(base, mask=m, other=0.0)
    h1 = tl.load(base + CHW, mask=m, other=0.0)
    h2 = tl.load(base + 2 * CHW, mask=m, other=0.0)
    h3 = tl.load(base + 3 * CHW, mask=m, other=0.0)
    if MERGE == MERGE_MAX:
        best = h0
        idx = tl.zeros_like(i).to(tl.int8)
        # replace the best so far unless it is NaN, by a NaN or a strictly larger value
        take = (best == best) & ((h1 != h1) | (h1 > best))
        best = tl.where(take, h1, best)
        idx = tl.where(take, 1, idx).to(tl.int8)
        take = (best == best) & ((h2 != h2) | (h2 > best))
        best = tl.where(take, h2, best)
        idx = tl.where(take, 2, idx).to(tl.int8)
        take = (best == best) & ((h3 != h3) | (h3 > best))
        best = tl.where(take, h3, best)
        idx = tl.where(take, 3, idx).to(tl.int8)
        tl.store(idx_ptr + i, idx, mask=m)
        out = best
    elif MERGE == MERGE_MEAN:
        out = (h0 + h1 + h2 + h3) / 4.0
    else:
        out = h0 + h1 + h2 + h3
    tl.store(out_ptr + i, out, mask=m)


@triton.jit
def _routed_grad(op, oo, ip, io, m, d, MERGE: tl.constexpr, ACC: tl.constexpr):
    """The gradient of this direction's ``h`` on one line, from the merged output's gradient."""
    go = tl.load(op + oo, mask=m, other=0.0).to(ACC)
    if MERGE == MERGE_MAX:
        win = tl.load(ip + io, mask=m, other=0)
        go = tl.where(win == d, go, 0.0)
    elif MERGE == MERGE_MEAN:
        go = go / 4.0
    return go


@triton.jit
def _store_shared(ptr, val, mask, ATOMIC: tl.constexpr):
    """Store a channel-reduced gradient: atomically added when several programs share it."""
    if ATOMIC:
        tl.atomic_add(ptr, val, mask=mask)
    else:
        tl.store(ptr, val, mask=mask)


@triton.jit
def scan_bwd_kernel(
    go_ptr, idx_ptr, x_ptr, g_ptr, l_ptr, hs_ptr, gx_ptr, gg_ptr, gl_ptr, scr_ptr,
    C, H, W, NCB, dir0, chunk,
    sob, sod, soc, soh, sow,
    sib, sic, sih, siw,
    sxb, sxc, sxh, sxw,
    sgb, sgd, sgk, sgc, sgh, sgw,
    slb, sld, slc, slh, slw,
    shb, shd, shc, shh, shw,
    sxgb, sxgd, sxgc, sxgh, sxgw,
    sggb, sggd, sggk, sggc, sggh, sggw,
    slgb, slgd, slgc, slgh, slgw,
    K: tl.constexpr, G_SHARED: tl.constexpr, HAS_L: tl.constexpr, L_SHARED: tl.constexpr,
    ATOMIC: tl.constexpr, NORM: tl.constexpr, MERGE: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr,
):
    """Reverse (adjoint) sweep of one chunk of one direction for ``CB`` channels.

    Needs only the forward outputs ``hs``. With ``a`` the adjoint of ``h`` (the merged output's
    gradient routed to this direction, plus what later lines send back), line by line:
    ``dx = a * (1 - sum g)`` (or ``a * l``), ``dl = a * x``, ``dg_j = a * h_prev[j] - a * x``
    (or ``a * h_prev[j]``), chained through the normalisation to the raw gates, and
    ``a_prev[m] += a[m - o_j] * g_j[m - o_j]`` (the lateral terms read back from a two-line
    scratch ring after a barrier). Writes per-direction ``dx`` partials ``gx``
    ``(B, ndirs, C, H, W)``, and gate / input-weight gradients per channel, or, when shared,
    summed over this program's channels and then either atomically added into ``(.., 1, H, W)``
    (``ATOMIC``) or stored as one partial per channel block ``(.., NCB, H, W)`` (deterministic).
    """
    ACC = hs_ptr.dtype.element_ty
    b, cblk, c0, ds, d, horizontal, L, t0, t1, cl, ks, lane, m, v0, v2 = _program(
        C, H, W, NCB, dir0, chunk, CB, BLOCK)

    o_l, o_k = _ls(horizontal, soh, sow)
    i_l, i_k = _ls(horizontal, sih, siw)
    x_l, x_k = _ls(horizontal, sxh, sxw)
    g_l, g_k = _ls(horizontal, sgh, sgw)
    l_l, l_k = _ls(horizontal, slh, slw)
    h_l, h_k = _ls(horizontal, shh, shw)
    xg_l, xg_k = _ls(horizontal, sxgh, sxgw)
    gg_l, gg_k = _ls(horizontal, sggh, sggw)
    lg_l, lg_k = _ls(horizontal, slgh, slgw)

    op = go_ptr + b * sob + ds * sod + c0 * soc
    oo = cl * soc + ks * o_k
    ip = idx_ptr + b * sib + c0 * sic
    io = cl * sic + ks * i_k
    xp = x_ptr + b * sxb + c0 * sxc
    xo = cl * sxc + ks * x_k
    hp = hs_ptr + b * shb + ds * shd + c0 * shc
    ho = cl * shc + ks * h_k
    xgp = gx_ptr + b * sxgb + ds * sxgd + c0 * sxgc
    xgo = cl * sxgc + ks * xg_k
    if G_SHARED:
        gp = g_ptr + b * sgb + ds * sgd
        go = ks * g_k
        ggp = gg_ptr + b * sggb + ds * sggd
        if not ATOMIC:
            ggp += cblk * sggc  # this channel block's partial
        ggo = ks * gg_k
        gm = lane
    else:
        gp = g_ptr + b * sgb + ds * sgd + c0 * sgc
        go = cl * sgc + ks * g_k
        ggp = gg_ptr + b * sggb + ds * sggd + c0 * sggc
        ggo = cl * sggc + ks * gg_k
        gm = m
    if HAS_L:
        if L_SHARED:
            lp = l_ptr + b * slb + ds * sld
            lo = cl * 0 + ks * l_k
            lgp = gl_ptr + b * slgb + ds * slgd
            if not ATOMIC:
                lgp += cblk * slgc
            lgo = ks * lg_k
        else:
            lp = l_ptr + b * slb + ds * sld + c0 * slc
            lo = cl * slc + ks * l_k
            lgp = gl_ptr + b * slgb + ds * slgd + c0 * slgc
            lgo = cl * slgc + ks * lg_k
    # this program's two-line scratch ring: (2 parities, 2 slots, CB, BLOCK)
    pid = (tl.program_id(2) * tl.num_programs(1) + tl.program_id(1)).to(tl.int64) * tl.num_programs(0) \
        + tl.program_id(0)
    sp0 = scr_ptr + pid * (4 * CB * BLOCK)
    so = cl * BLOCK + ks

    back = tl.zeros((CB, BLOCK), dtype=ACC)  # what line t + 1 sends back to line t
    for i in range(0, t1 - t0 - 1):
        t = t1 - 1 - i
        line = _line_of(t, L, d)
        a = _routed_grad(op + line * o_l, oo, ip + line * i_l, io, m, d, MERGE, ACC) + back
        xv = tl.load(xp + line * x_l + xo, mask=m, other=0.0).to(ACC)
        r0, r1, r2 = _load_raw(gp + line * g_l, go, sgk, gm, v0, v2, K, NORM, ACC)
        g0, g1, g2, den = _normalize(r0, r1, r2, v0, v2, K, NORM)
        hprev = hp + _prev_of(line, d) * h_l
        h_mid = tl.load(hprev + ho, mask=m, other=0.0)
        ax = a * xv
        if HAS_L:
            lv = tl.load(lp + line * l_l + lo, mask=m, other=0.0).to(ACC)
            dx = a * lv
            dg1 = a * h_mid
        else:
            if K == 3:
                s = g0 + g1 + g2
            else:
                s = g1
            dx = a * (1.0 - s)
            dg1 = a * h_mid - ax
        tl.store(xgp + line * xg_l + xgo, dx, mask=m)
        if HAS_L:
            if L_SHARED:
                _store_shared(lgp + line * lg_l + lgo, tl.sum(tl.where(m, ax, 0.0), axis=0)[None, :], lane, ATOMIC)
            else:
                tl.store(lgp + line * lg_l + lgo, ax, mask=m)
        if K == 3:
            h_lo = tl.load(hprev - h_k + ho, mask=m & v0, other=0.0)
            h_hi = tl.load(hprev + h_k + ho, mask=m & v2, other=0.0)
            if HAS_L:
                dg0 = a * h_lo
                dg2 = a * h_hi
            else:
                dg0 = a * h_lo - ax
                dg2 = a * h_hi - ax
            dg0 = tl.where(m & v0, dg0, 0.0)
            dg2 = tl.where(m & v2, dg2, 0.0)
        else:
            dg0 = dg1
            dg2 = dg1
        dg1 = tl.where(m, dg1, 0.0)
        if G_SHARED:
            dg1 = tl.sum(dg1, axis=0)[None, :]
            if K == 3:
                dg0 = tl.sum(dg0, axis=0)[None, :]
                dg2 = tl.sum(dg2, axis=0)[None, :]
        dr0, dr1, dr2 = _normalize_bwd(dg0, dg1, dg2, r0, r1, r2, g0, g1, g2, den, v0, v2, K, NORM)
        ggl = ggp + line * gg_l + ggo
        if G_SHARED:
            if K == 3:
                _store_shared(ggl, dr0, gm, ATOMIC)
                _store_shared(ggl + sggk, dr1, gm, ATOMIC)
                _store_shared(ggl + 2 * sggk, dr2, gm, ATOMIC)
            else:
                _store_shared(ggl, dr1, gm, ATOMIC)
        else:
            if K == 3:
                tl.store(ggl, dr0, mask=gm)
                tl.store(ggl + sggk, dr1, mask=gm)
                tl.store(ggl + 2 * sggk, dr2, mask=gm)
            else:
                tl.store(ggl, dr1, mask=gm)
        if K == 3:
            # adjoint of the previous line: a_prev[m] = u0[m + 1] + u1[m] + u2[m - 1], u_j = a * g_j
            sp = sp0 + (i % 2) * (2 * CB * BLOCK)
            tl.store(sp + so, a * g0, mask=m)
            tl.store(sp + CB * BLOCK + so, a * g2, mask=m)
            tl.debug_barrier()
            u0 = tl.load(sp + 1 + so, mask=m & v2, other=0.0)
            u2 = tl.load(sp + CB * BLOCK - 1 + so, mask=m & v0, other=0.0)
            back = u0 + a * g1 + u2
        else:
            back = a * g1

    # the first line of the chunk: h = x (or l * x); its gates are never read (gradient 0)
    line = _line_of(t0, L, d)
    a = _routed_grad(op + line * o_l, oo, ip + line * i_l, io, m, d, MERGE, ACC) + back
    if HAS_L:
        xv = tl.load(xp + line * x_l + xo, mask=m, other=0.0).to(ACC)
        lv = tl.load(lp + line * l_l + lo, mask=m, other=0.0).to(ACC)
        tl.store(xgp + line * xg_l + xgo, a * lv, mask=m)
        if L_SHARED:
            _store_shared(lgp + line * lg_l + lgo, tl.sum(tl.where(m, a * xv, 0.0), axis=0)[None, :], lane, ATOMIC)
        else:
            tl.store(lgp + line * lg_l + lgo, a * xv, mask=m)
    else:
        tl.store(xgp + line * xg_l + xgo, a, mask=m)
    if not (G_SHARED and ATOMIC):  # the atomic buffer starts at zero
        if G_SHARED:
            zero = tl.zeros((1, BLOCK), dtype=ACC)
        else:
            zero = tl.zeros((CB, BLOCK), dtype=ACC)
        ggl = ggp + line * gg_l + ggo
        tl.store(ggl, zero, mask=gm)
        if K == 3:
            tl.store(ggl + sggk, zero, mask=gm)
            tl.store(ggl + 2 * sggk, zero, mask=gm)
