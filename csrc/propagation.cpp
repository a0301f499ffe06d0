// CPU kernels of the spatial propagation operator (Liu et al., NIPS 2017, Eq. 1, 9, 10).
//
// Semantics: ../shared/spec/propagation.md. For every scan line after the first, at lateral
// index k with valid neighbours j of the previous line:
//     h[k] = (1 - sum_j g_j[k]) x[k] + sum_j g_j[k] h_prev[j]  =  x[k] + sum_j g_j[k] (h_prev[j] - x[k])
// The first line copies x. Gates are read at the destination pixel; an out-of-range neighbour's
// gate is dropped from both sums.
//
// Ops (namespace "spn"), registered with torch.library; fake impls and autograd live in Python
// (spn/ops/_custom.py):
//   propagate_fwd(x, gates, direction)                        -> h
//   propagate_bwd(grad_h, x, gates, h, direction)             -> (grad_x, grad_gates)
//   propagate4_fwd(x, gates4, merge, save)                    -> (out, hs)
//   propagate4_bwd(grad_out, x, gates4, hs, merge)            -> (grad_x, grad_gates4)
// direction: 0 left_to_right, 1 right_to_left, 2 top_to_bottom, 3 bottom_to_top.
// merge: 0 max (ties to the first direction), 1 mean, 2 sum.
//
// Layout: every (b, c) plane is scanned by one thread (at::parallel_for over B*C planes). Vertical
// scans (lines are rows) vectorise over the contiguous lateral index. Horizontal scans transpose
// the plane into per-thread scratch (SSE 4x4 tiles), scan it vertically and transpose back.
// The backward needs only the forward output h: a reverse adjoint sweep per direction, then an
// elementwise pass in the original layout for grad_x and the gate gradients.

#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include <cstdint>
#include <type_traits>
#include <vector>

namespace spn {
namespace {

// ---------------------------------------------------------------------------------------------
// Scans over planes whose scan lines are rows: L lines of n contiguous values. Horizontal
// directions are brought to this form by transposing the plane into per-thread scratch, so
// every inner loop runs over contiguous memory and vectorises.

template <typename T>
inline void transpose_plane(const T* __restrict__ src, int64_t rows, int64_t cols, T* __restrict__ dst) {
  // dst[c * rows + r] = src[r * cols + c]
  constexpr int64_t BS = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += BS) {
    const int64_t r1 = std::min(rows, r0 + BS);
    for (int64_t c0 = 0; c0 < cols; c0 += BS) {
      const int64_t c1 = std::min(cols, c0 + BS);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
    }
  }
}

#if defined(__SSE2__)
// float: 4x4 register transposes inside 16x16 tiles, scalar edges
template <>
inline void transpose_plane<float>(const float* __restrict__ src, int64_t rows, int64_t cols,
                                   float* __restrict__ dst) {
  constexpr int64_t BS = 16;
  const int64_t r4 = rows & ~int64_t(3), c4 = cols & ~int64_t(3);
  for (int64_t r0 = 0; r0 < r4; r0 += BS) {
    const int64_t r1 = std::min(r4, r0 + BS);
    for (int64_t c0 = 0; c0 < c4; c0 += BS) {
      const int64_t c1 = std::min(c4, c0 + BS);
      for (int64_t r = r0; r < r1; r += 4)
        for (int64_t c = c0; c < c1; c += 4) {
          __m128 a = _mm_loadu_ps(src + r * cols + c);
          __m128 b = _mm_loadu_ps(src + (r + 1) * cols + c);
          __m128 e = _mm_loadu_ps(src + (r + 2) * cols + c);
          __m128 f = _mm_loadu_ps(src + (r + 3) * cols + c);
          _MM_TRANSPOSE4_PS(a, b, e, f);
          _mm_storeu_ps(dst + c * rows + r, a);
          _mm_storeu_ps(dst + (c + 1) * rows + r, b);
          _mm_storeu_ps(dst + (c + 2) * rows + r, e);
          _mm_storeu_ps(dst + (c + 3) * rows + r, f);
        }
    }
  }
  for (int64_t r = 0; r < r4; ++r)  // right edge
    for (int64_t c = c4; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
  for (int64_t r = r4; r < rows; ++r)  // bottom edge
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}
#endif

// one line of the forward: hr = xr + sum_j g_j (hp[nbr_j] - xr)
template <typename T, int K>
inline void fwd_line(const T* __restrict__ xr, const T* __restrict__ hp, T* __restrict__ hr,
                     const T* __restrict__ g0, const T* __restrict__ g1, const T* __restrict__ g2, int64_t n) {
  if (K == 1) {
    for (int64_t k = 0; k < n; ++k) hr[k] = xr[k] + g0[k] * (hp[k] - xr[k]);
    return;
  }
  if (n == 1) {
    hr[0] = xr[0] + g1[0] * (hp[0] - xr[0]);
    return;
  }
  hr[0] = xr[0] + g1[0] * (hp[0] - xr[0]) + g2[0] * (hp[1] - xr[0]);
  for (int64_t k = 1; k < n - 1; ++k) {
    const T xv = xr[k];
    hr[k] = xv + g0[k] * (hp[k - 1] - xv) + g1[k] * (hp[k] - xv) + g2[k] * (hp[k + 1] - xv);
  }
  const int64_t e = n - 1;
  hr[e] = xr[e] + g0[e] * (hp[e - 1] - xr[e]) + g1[e] * (hp[e] - xr[e]);
}

template <typename T, int K>
void vscan_fwd_impl(const T* x, const T* g, int64_t gps, T* h, int64_t L, int64_t n, bool reverse) {
  auto line = [&](int64_t t) { return (reverse ? L - 1 - t : t) * n; };
  int64_t o = line(0);
  std::copy(x + o, x + o + n, h + o);
  for (int64_t t = 1; t < L; ++t) {
    const int64_t op = o;
    o = line(t);
    const T* g0 = g + o;
    const T* g1 = K == 3 ? g + gps + o : g0;
    const T* g2 = K == 3 ? g + 2 * gps + o : g0;
    fwd_line<T, K>(x + o, h + op, h + o, g0, g1, g2, n);
  }
}

template <typename T>
void vscan_fwd(const T* x, const T* g, int64_t gps, T* h, int64_t K, int64_t L, int64_t n, bool reverse) {
  if (K == 1) vscan_fwd_impl<T, 1>(x, g, gps, h, L, n, reverse);
  else vscan_fwd_impl<T, 3>(x, g, gps, h, L, n, reverse);
}

// Backward, step 1: the adjoint sweep of one vertical scan (lines are rows of n values).
// D_t[k] = scale * gh_t[k] + sum over the pixels k' of line t+1 that read k of g_slot[k'] D_{t+1}[k'].
// (k' = k reads k through slot 1, k' = k + 1 through slot 0, k' = k - 1 through slot 2.)
template <typename T, int K>
void vscan_adjoint_impl(const T* gh, T scale, const T* g, int64_t gps, T* D, int64_t L, int64_t n, bool reverse) {
  auto line = [&](int64_t t) { return (reverse ? L - 1 - t : t) * n; };
  for (int64_t t = L - 1; t >= 0; --t) {
    const int64_t o = line(t);
    T* __restrict__ dc = D + o;
    const T* __restrict__ ghr = gh + o;
    if (t == L - 1) {
      for (int64_t k = 0; k < n; ++k) dc[k] = ghr[k] * scale;
      continue;
    }
    const int64_t on = line(t + 1);
    const T* __restrict__ dn = D + on;
    if (K == 1) {
      const T* __restrict__ gn = g + on;
      for (int64_t k = 0; k < n; ++k) dc[k] = ghr[k] * scale + gn[k] * dn[k];
    } else {
      const T* __restrict__ gn0 = g + on;
      const T* __restrict__ gn1 = g + gps + on;
      const T* __restrict__ gn2 = g + 2 * gps + on;
      if (n == 1) {
        dc[0] = ghr[0] * scale + gn1[0] * dn[0];
        continue;
      }
      dc[0] = ghr[0] * scale + gn1[0] * dn[0] + gn0[1] * dn[1];
      for (int64_t k = 1; k < n - 1; ++k)
        dc[k] = ghr[k] * scale + gn1[k] * dn[k] + gn0[k + 1] * dn[k + 1] + gn2[k - 1] * dn[k - 1];
      const int64_t e = n - 1;
      dc[e] = ghr[e] * scale + gn1[e] * dn[e] + gn2[e - 1] * dn[e - 1];
    }
  }
}

template <typename T>
void vscan_adjoint(const T* gh, T scale, const T* g, int64_t gps, T* D, int64_t K, int64_t L, int64_t n,
                   bool reverse) {
  if (K == 1) vscan_adjoint_impl<T, 1>(gh, scale, g, gps, D, L, n, reverse);
  else vscan_adjoint_impl<T, 3>(gh, scale, g, gps, D, L, n, reverse);
}

// Backward, step 2: gradients from the adjoints D, elementwise in the plane's own (H, W) layout.
// For a pixel with previous-line neighbours j (valid ones only):
//   grad_x = D (1 - sum_j g_j),  grad_g_j = D (h[j] - x);
// on the first scanned line grad_x = D and the gates get zero gradient.
// ACC: accumulate into gx (the four-direction op) instead of writing it.
template <typename T, int K, bool ACC>
void grads_from_adjoint_impl(int64_t dir, const T* D, const T* x, const T* g, int64_t gps, const T* h, T* gx,
                             T* gg, int64_t ggps, int64_t H, int64_t W) {
  auto put = [](T* dst, int64_t i, T v) {
    if (ACC) dst[i] += v;
    else dst[i] = v;
  };
  if (dir >= 2) {  // vertical: lines are rows, the previous line is row r -/+ 1, lateral index = column
    const int64_t first = dir == 2 ? 0 : H - 1;
    for (int64_t r = 0; r < H; ++r) {
      const int64_t o = r * W;
      const T* __restrict__ d = D + o;
      T* __restrict__ gxr = gx + o;
      if (r == first) {
        for (int64_t c = 0; c < W; ++c) put(gxr, c, d[c]);
        for (int64_t j = 0; j < K; ++j) std::fill(gg + j * ggps + o, gg + j * ggps + o + W, T(0));
        continue;
      }
      const T* __restrict__ hp = h + (dir == 2 ? r - 1 : r + 1) * W;
      const T* __restrict__ xr = x + o;
      const T* __restrict__ g0 = g + o;
      T* __restrict__ gg0 = gg + o;
      if (K == 1) {
        for (int64_t c = 0; c < W; ++c) {
          put(gxr, c, d[c] * (T(1) - g0[c]));
          gg0[c] = d[c] * (hp[c] - xr[c]);
        }
        continue;
      }
      const T* __restrict__ g1 = g + gps + o;
      const T* __restrict__ g2 = g + 2 * gps + o;
      T* __restrict__ gg1 = gg + ggps + o;
      T* __restrict__ gg2 = gg + 2 * ggps + o;
      if (W == 1) {
        put(gxr, 0, d[0] * (T(1) - g1[0]));
        gg0[0] = T(0);
        gg1[0] = d[0] * (hp[0] - xr[0]);
        gg2[0] = T(0);
        continue;
      }
      put(gxr, 0, d[0] * (T(1) - g1[0] - g2[0]));
      gg0[0] = T(0);
      gg1[0] = d[0] * (hp[0] - xr[0]);
      gg2[0] = d[0] * (hp[1] - xr[0]);
      for (int64_t c = 1; c < W - 1; ++c) {
        const T dv = d[c], xv = xr[c];
        put(gxr, c, dv * (T(1) - g0[c] - g1[c] - g2[c]));
        gg0[c] = dv * (hp[c - 1] - xv);
        gg1[c] = dv * (hp[c] - xv);
        gg2[c] = dv * (hp[c + 1] - xv);
      }
      const int64_t e = W - 1;
      put(gxr, e, d[e] * (T(1) - g0[e] - g1[e]));
      gg0[e] = d[e] * (hp[e - 1] - xr[e]);
      gg1[e] = d[e] * (hp[e] - xr[e]);
      gg2[e] = T(0);
    }
    return;
  }
  // horizontal: lines are columns, the previous line is column c -/+ 1, lateral index = row
  const bool l2r = dir == 0;
  const int64_t c_first = l2r ? 0 : W - 1;
  const int64_t c_lo = l2r ? 1 : 0, c_hi = l2r ? W : W - 1;  // columns with a previous line
  const int64_t sh = l2r ? -1 : 1;                           // offset of the previous column
  for (int64_t r = 0; r < H; ++r) {
    const int64_t o = r * W;
    const T* __restrict__ d = D + o;
    const T* __restrict__ xr = x + o;
    T* __restrict__ gxr = gx + o;
    put(gxr, c_first, d[c_first]);
    for (int64_t j = 0; j < K; ++j) gg[j * ggps + o + c_first] = T(0);
    const T* __restrict__ hc = h + o + sh;  // hc[c] = h[r][c + sh]
    const T* __restrict__ g0 = g + o;
    T* __restrict__ gg0 = gg + o;
    if (K == 1) {
      for (int64_t c = c_lo; c < c_hi; ++c) {
        put(gxr, c, d[c] * (T(1) - g0[c]));
        gg0[c] = d[c] * (hc[c] - xr[c]);
      }
      continue;
    }
    const T* __restrict__ g1 = g + gps + o;
    const T* __restrict__ g2 = g + 2 * gps + o;
    T* __restrict__ gg1 = gg + ggps + o;
    T* __restrict__ gg2 = gg + 2 * ggps + o;
    const bool has_up = r >= 1, has_down = r + 1 < H;
    const T* __restrict__ hu = h + o - W + sh;  // row r - 1 (only read when has_up)
    const T* __restrict__ hd = h + o + W + sh;  // row r + 1 (only read when has_down)
    if (has_up && has_down) {
      for (int64_t c = c_lo; c < c_hi; ++c) {
        const T dv = d[c], xv = xr[c];
        put(gxr, c, dv * (T(1) - g0[c] - g1[c] - g2[c]));
        gg0[c] = dv * (hu[c] - xv);
        gg1[c] = dv * (hc[c] - xv);
        gg2[c] = dv * (hd[c] - xv);
      }
    } else {
      for (int64_t c = c_lo; c < c_hi; ++c) {
        const T dv = d[c], xv = xr[c];
        T s = g1[c];
        gg1[c] = dv * (hc[c] - xv);
        if (has_up) {
          s += g0[c];
          gg0[c] = dv * (hu[c] - xv);
        } else {
          gg0[c] = T(0);
        }
        if (has_down) {
          s += g2[c];
          gg2[c] = dv * (hd[c] - xv);
        } else {
          gg2[c] = T(0);
        }
        put(gxr, c, dv * (T(1) - s));
      }
    }
  }
}

template <typename T, bool ACC>
void grads_from_adjoint(int64_t dir, const T* D, const T* x, const T* g, int64_t gps, const T* h, T* gx, T* gg,
                        int64_t ggps, int64_t K, int64_t H, int64_t W) {
  if (K == 1) grads_from_adjoint_impl<T, 1, ACC>(dir, D, x, g, gps, h, gx, gg, ggps, H, W);
  else grads_from_adjoint_impl<T, 3, ACC>(dir, D, x, g, gps, h, gx, gg, ggps, H, W);
}

// Denormals: adjoints decay geometrically along a scan (products of gates below one) and
// reach the subnormal range, where x86 arithmetic is many times slower. Each worker flushes
// them to zero (FTZ/DAZ) while it runs a kernel and restores its previous mode afterwards.
struct FlushDenormals {
#if defined(__SSE2__)
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Max merge: route grad_out to the first direction reaching the max (as torch.max(dim=0)).
// gm receives four planes: gm[d * n + i] = go[i] if direction d wins at i, else 0.
template <typename T>
inline void route_max_grad(const T* __restrict__ h0, const T* __restrict__ h1, const T* __restrict__ h2,
                           const T* __restrict__ h3, const T* __restrict__ go, T* __restrict__ gm, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same<T, float>::value) {
    const __m128 zero = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) {
      const __m128 v0 = _mm_loadu_ps(h0 + i), v1 = _mm_loadu_ps(h1 + i);
      const __m128 v2 = _mm_loadu_ps(h2 + i), v3 = _mm_loadu_ps(h3 + i);
      const __m128 g = _mm_loadu_ps(go + i);
      const __m128 best = _mm_max_ps(_mm_max_ps(v0, v1), _mm_max_ps(v2, v3));
      const __m128 e0 = _mm_cmpeq_ps(v0, best);
      const __m128 e1 = _mm_andnot_ps(e0, _mm_cmpeq_ps(v1, best));
      const __m128 e01 = _mm_or_ps(e0, e1);
      const __m128 e2 = _mm_andnot_ps(e01, _mm_cmpeq_ps(v2, best));
      const __m128 e3 = _mm_andnot_ps(_mm_or_ps(e01, e2), _mm_castsi128_ps(_mm_set1_epi32(-1)));
      _mm_storeu_ps(gm + i, _mm_and_ps(e0, g));
      _mm_storeu_ps(gm + n + i, _mm_and_ps(e1, g));
      _mm_storeu_ps(gm + 2 * n + i, _mm_and_ps(e2, g));
      _mm_storeu_ps(gm + 3 * n + i, _mm_and_ps(e3, g));
      (void)zero;
    }
  }
#endif
  for (; i < n; ++i) {
    const T v0 = h0[i], v1 = h1[i], v2 = h2[i], v3 = h3[i], g = go[i];
    int a = 0;
    T best = v0;
    if (v1 > best) { best = v1; a = 1; }
    if (v2 > best) { best = v2; a = 2; }
    if (v3 > best) { a = 3; }
    gm[i] = a == 0 ? g : T(0);
    gm[n + i] = a == 1 ? g : T(0);
    gm[2 * n + i] = a == 2 ? g : T(0);
    gm[3 * n + i] = a == 3 ? g : T(0);
  }
}

inline bool is_horizontal(int64_t dir) { return dir < 2; }
inline bool is_reverse(int64_t dir) { return dir == 1 || dir == 3; }

// Per-thread scratch for one plane: transposed copies for horizontal directions.
template <typename T>
struct Scratch {
  std::vector<T> xT, gT, hT, ghT, D, DT, tmp, gm;
  Scratch(int64_t HW, int64_t K, bool fwd, bool bwd, bool need_tmp) {
    gT.resize(K * HW);
    if (fwd) {
      xT.resize(HW);
      hT.resize(HW);
    }
    if (need_tmp) tmp.resize(HW);
    if (bwd) {
      ghT.resize(HW);
      D.resize(HW);
      DT.resize(HW);
    }
  }
};

// Forward of one direction on an (H, W) plane. g: K planes of gates (stride gps). xT: the
// transposed x (W, H) when the direction is horizontal (computed by the caller, shared).
template <typename T>
void plane_fwd(int64_t dir, const T* x, const T* xT, const T* g, int64_t gps, T* h, int64_t K, int64_t H,
               int64_t W, Scratch<T>& S) {
  const int64_t HW = H * W;
  if (HW == 0) return;
  if (!is_horizontal(dir)) {
    vscan_fwd<T>(x, g, gps, h, K, H, W, is_reverse(dir));
    return;
  }
  for (int64_t j = 0; j < K; ++j) transpose_plane(g + j * gps, H, W, S.gT.data() + j * HW);
  vscan_fwd<T>(xT, S.gT.data(), HW, S.hT.data(), K, W, H, is_reverse(dir));
  transpose_plane(S.hT.data(), W, H, h);
}

// Backward of one direction on an (H, W) plane: gh is the adjoint of h (times scale); for a
// horizontal direction ghT is its transpose, prepared by the caller (ghT_ready) or here.
template <typename T, bool ACC>
void plane_bwd(int64_t dir, const T* gh, bool ghT_ready, T scale, const T* x, const T* g, int64_t gps,
               const T* h, T* gx, T* gg, int64_t ggps, int64_t K, int64_t H, int64_t W, Scratch<T>& S) {
  const int64_t HW = H * W;
  if (HW == 0) return;
  T* D = S.D.data();
  if (!is_horizontal(dir)) {
    vscan_adjoint<T>(gh, scale, g, gps, D, K, H, W, is_reverse(dir));
  } else {
    if (!ghT_ready) transpose_plane(gh, H, W, S.ghT.data());
    for (int64_t j = 0; j < K; ++j) transpose_plane(g + j * gps, H, W, S.gT.data() + j * HW);
    vscan_adjoint<T>(S.ghT.data(), scale, S.gT.data(), HW, S.DT.data(), K, W, H, is_reverse(dir));
    transpose_plane(S.DT.data(), W, H, D);
  }
  grads_from_adjoint<T, ACC>(dir, D, x, g, gps, h, gx, gg, ggps, K, H, W);
}

// ---------------------------------------------------------------------------------------------
// checks (the Python API validates first; these guard direct calls of torch.ops.spn.*)
void check_common(const at::Tensor& x, const at::Tensor& gates, int64_t gdim) {
  TORCH_CHECK(x.device().is_cpu() && gates.device().is_cpu(), "spn: CPU kernel got a non-CPU tensor");
  TORCH_CHECK(x.dim() == 4, "spn: x must be (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(gates.dim() == gdim, "spn: gates must have ", gdim, " dims, got ", gates.sizes());
  TORCH_CHECK(x.scalar_type() == gates.scalar_type(), "spn: x and gates must share a dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "spn: the CPU kernel supports float32 and float64, got ", x.scalar_type());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t o = gdim - 5;  // 1 for the four-direction layout
  const int64_t K = gates.size(o + 1), Cg = gates.size(o + 2);
  TORCH_CHECK(gates.size(0) == B && gates.size(o + 3) == H && gates.size(o + 4) == W,
              "spn: gates ", gates.sizes(), " do not match x ", x.sizes());
  TORCH_CHECK(K == 1 || K == 3, "spn: K must be 1 or 3, got ", K);
  TORCH_CHECK(Cg == 1 || Cg == C, "spn: Cg must be 1 or C, got ", Cg);
  if (o == 1) TORCH_CHECK(gates.size(1) == 4, "spn: gates4 must have 4 directions");
}

at::Tensor propagate_fwd(const at::Tensor& x_, const at::Tensor& gates_, int64_t direction) {
  check_common(x_, gates_, 5);
  TORCH_CHECK(direction >= 0 && direction < 4, "spn: direction must be in 0..3, got ", direction);
  const at::Tensor x = x_.contiguous();
  const at::Tensor gates = gates_.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = gates.size(1), Cg = gates.size(2), HW = H * W;
  at::Tensor h = at::empty_like(x, at::MemoryFormat::Contiguous);
  const bool hor = is_horizontal(direction);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate_fwd", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = gates.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      FlushDenormals ftz;
      Scratch<scalar_t> S(hor ? HW : 0, hor ? K : 0, true, false, false);
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / C, c = s % C;
        const scalar_t* g = gp + (b * K * Cg + (Cg == 1 ? 0 : c)) * HW;
        if (hor) transpose_plane(xp + s * HW, H, W, S.xT.data());
        plane_fwd<scalar_t>(direction, xp + s * HW, S.xT.data(), g, Cg * HW, hp + s * HW, K, H, W, S);
      }
    });
  });
  return h;
}

std::tuple<at::Tensor, at::Tensor> propagate_bwd(const at::Tensor& grad_h_, const at::Tensor& x_,
                                                 const at::Tensor& gates_, const at::Tensor& h_,
                                                 int64_t direction) {
  check_common(x_, gates_, 5);
  TORCH_CHECK(direction >= 0 && direction < 4, "spn: direction must be in 0..3, got ", direction);
  TORCH_CHECK(grad_h_.sizes() == x_.sizes() && h_.sizes() == x_.sizes(), "spn: grad_h/h must match x");
  const at::Tensor x = x_.contiguous();
  const at::Tensor gates = gates_.contiguous();
  const at::Tensor h = h_.contiguous().to(x.scalar_type());
  const at::Tensor gh = grad_h_.contiguous().to(x.scalar_type());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = gates.size(1), Cg = gates.size(2), HW = H * W;
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  // gates shared across channels: per-channel gradients, summed afterwards
  const bool shared = (Cg == 1 && C > 1);
  at::Tensor gg = shared ? at::empty({B, K, C, H, W}, x.options()) : at::empty(gates.sizes(), x.options());
  const bool hor = is_horizontal(direction);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate_bwd", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = gates.data_ptr<scalar_t>();
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* ghp = gh.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* ggp = gg.data_ptr<scalar_t>();
    const int64_t ggc = shared ? C : Cg;
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      FlushDenormals ftz;
      Scratch<scalar_t> S(HW, hor ? K : 0, false, true, false);
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / C, c = s % C;
        const scalar_t* g = gp + (b * K * Cg + (Cg == 1 ? 0 : c)) * HW;
        scalar_t* ggs = ggp + (b * K * ggc + (ggc == 1 ? 0 : c)) * HW;
        plane_bwd<scalar_t, false>(direction, ghp + s * HW, false, scalar_t(1), xp + s * HW, g, Cg * HW,
                                   hp + s * HW, gxp + s * HW, ggs, ggc * HW, K, H, W, S);
      }
    });
  });
  if (shared) gg = gg.sum(2, /*keepdim=*/true);
  return {gx, gg};
}

// ---------------------------------------------------------------------------------------------
// four directions fused with the node-wise merge
std::tuple<at::Tensor, at::Tensor> propagate4_fwd(const at::Tensor& x_, const at::Tensor& gates_,
                                                  int64_t merge, bool save) {
  check_common(x_, gates_, 6);
  TORCH_CHECK(merge >= 0 && merge <= 2, "spn: merge must be 0 (max), 1 (mean) or 2 (sum)");
  const at::Tensor x = x_.contiguous();
  const at::Tensor gates = gates_.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = gates.size(2), Cg = gates.size(3), HW = H * W;
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor hs = save ? at::empty({4, B, C, H, W}, x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate4_fwd", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = gates.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    scalar_t* hsp = save ? hs.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      FlushDenormals ftz;
      Scratch<scalar_t> S(HW, K, true, false, !save);
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / C, c = s % C;
        scalar_t* o = op + s * HW;
        transpose_plane(xp + s * HW, H, W, S.xT.data());
        for (int64_t d = 0; d < 4; ++d) {
          const scalar_t* g = gp + ((b * 4 + d) * K * Cg + (Cg == 1 ? 0 : c)) * HW;
          scalar_t* hd = save ? hsp + (d * B * C + s) * HW : (d == 0 ? o : S.tmp.data());
          plane_fwd<scalar_t>(d, xp + s * HW, S.xT.data(), g, Cg * HW, hd, K, H, W, S);
          if (d == 0) {
            if (hd != o) std::copy(hd, hd + HW, o);
          } else if (merge == 0) {
            for (int64_t i = 0; i < HW; ++i) o[i] = hd[i] > o[i] ? hd[i] : o[i];
          } else {
            for (int64_t i = 0; i < HW; ++i) o[i] += hd[i];
          }
        }
        if (merge == 1)
          for (int64_t i = 0; i < HW; ++i) o[i] *= scalar_t(0.25);
      }
    });
  });
  return {out, hs};
}

std::tuple<at::Tensor, at::Tensor> propagate4_bwd(const at::Tensor& grad_out_, const at::Tensor& x_,
                                                  const at::Tensor& gates_, const at::Tensor& hs_,
                                                  int64_t merge) {
  check_common(x_, gates_, 6);
  TORCH_CHECK(merge >= 0 && merge <= 2, "spn: merge must be 0 (max), 1 (mean) or 2 (sum)");
  TORCH_CHECK(hs_.dim() == 5 && hs_.size(0) == 4 && hs_.sizes().slice(1) == x_.sizes(),
              "spn: hs must be (4, B, C, H, W); run the forward with save=True");
  TORCH_CHECK(grad_out_.sizes() == x_.sizes(), "spn: grad_out ", grad_out_.sizes(), " must match x ", x_.sizes());
  const at::Tensor x = x_.contiguous();
  const at::Tensor gates = gates_.contiguous();
  const at::Tensor hs = hs_.contiguous();
  const at::Tensor go = grad_out_.contiguous().to(x.scalar_type());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = gates.size(2), Cg = gates.size(3), HW = H * W;
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  const bool shared = (Cg == 1 && C > 1);
  at::Tensor gg = shared ? at::empty({B, 4, K, C, H, W}, x.options()) : at::empty(gates.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate4_bwd", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = gates.data_ptr<scalar_t>();
    const scalar_t* hsp = hs.data_ptr<scalar_t>();
    const scalar_t* gop = go.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* ggp = gg.data_ptr<scalar_t>();
    const int64_t ggc = shared ? C : Cg;
    const scalar_t scale = merge == 1 ? scalar_t(0.25) : scalar_t(1);
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      FlushDenormals ftz;
      Scratch<scalar_t> S(HW, K, false, true, false);
      if (merge == 0) S.gm.resize(4 * HW);
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / C, c = s % C;
        // Adjoint of each direction's output. max: grad_out routed to the first direction reaching
        // the max (as torch.max(dim=0)); mean: grad_out / 4; sum: grad_out.
        const scalar_t* go_s = gop + s * HW;
        if (merge == 0)
          route_max_grad<scalar_t>(hsp + s * HW, hsp + (B * C + s) * HW, hsp + (2 * B * C + s) * HW,
                                   hsp + (3 * B * C + s) * HW, go_s, S.gm.data(), HW);
        scalar_t* gxs = gxp + s * HW;
        for (int64_t d = 0; d < 4; ++d) {
          const scalar_t* g = gp + ((b * 4 + d) * K * Cg + (Cg == 1 ? 0 : c)) * HW;
          scalar_t* ggs = ggp + ((b * 4 + d) * K * ggc + (ggc == 1 ? 0 : c)) * HW;
          const scalar_t* hd = hsp + (d * B * C + s) * HW;
          const scalar_t* ghd = merge == 0 ? S.gm.data() + d * HW : go_s;
          const bool ghT_ready = (merge != 0 && d == 1);  // the same grad_out was transposed for d = 0
          if (d == 0)
            plane_bwd<scalar_t, false>(d, ghd, ghT_ready, scale, xp + s * HW, g, Cg * HW, hd, gxs, ggs, ggc * HW,
                                       K, H, W, S);
          else
            plane_bwd<scalar_t, true>(d, ghd, ghT_ready, scale, xp + s * HW, g, Cg * HW, hd, gxs, ggs, ggc * HW,
                                      K, H, W, S);
        }
      }
    });
  });
  if (shared) gg = gg.sum(3, /*keepdim=*/true);
  return {gx, gg};
}

}  // namespace

TORCH_LIBRARY(spn, m) {
  m.def("propagate_fwd(Tensor x, Tensor gates, int direction) -> Tensor");
  m.def("propagate_bwd(Tensor grad_h, Tensor x, Tensor gates, Tensor h, int direction) -> (Tensor, Tensor)");
  m.def("propagate4_fwd(Tensor x, Tensor gates, int merge, bool save) -> (Tensor, Tensor)");
  m.def("propagate4_bwd(Tensor grad_out, Tensor x, Tensor gates, Tensor hs, int merge) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(spn, CPU, m) {
  m.impl("propagate_fwd", &propagate_fwd);
  m.impl("propagate_bwd", &propagate_bwd);
  m.impl("propagate4_fwd", &propagate4_fwd);
  m.impl("propagate4_bwd", &propagate4_bwd);
}

}  // namespace spn

// A plain Python module: importing spn._C runs the registrations above.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "spn C++ kernels", -1, nullptr};
  return PyModule_Create(&module_def);
}
}
