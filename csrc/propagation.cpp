// CPU kernels of the spatial propagation operator, version 2 of the contract
// (../shared/spec/propagation.md; Liu et al., NIPS 2017, Eq. 1, 9, 10; GSPN's general form).
//
// For every scan line after the first of its chunk, at lateral index k with the valid
// neighbours j of the previous line and g the gates normalised on the fly from the raw gates r:
//     h[k] = (1 - sum_j g_j[k]) x[k] + sum_j g_j[k] h_prev[j]         (no input weight)
//     h[k] = l[k] x[k]            + sum_j g_j[k] h_prev[j]            (input weight l)
// The first line of a chunk is x (l x). Gates are read at the destination pixel; an invalid
// neighbour's gate is dropped from every sum (never multiplied by zero), and gates that are
// never used are never read, so a NaN there has no effect, as in the reference.
//
// Ops (namespace "spn"), registered with torch.library; fake impls and autograd in Python
// (spn/ops/_custom.py). normalize: 0 none, 1 clip, 2 always, 3 gspn. chunk: 0 = one chunk.
//   propagate_fwd(x, gates, input_weight?, direction, normalize, chunk)            -> h
//   propagate_bwd(grad_h, x, gates, input_weight?, h, direction, normalize, chunk) -> (gx, ggates, gl)
//   propagate4_fwd(x, gates4, input_weight4?, merge, normalize, chunk, save)       -> (out, hs)
//   propagate4_bwd(grad_out, x, gates4, input_weight4?, hs, merge, normalize, chunk) -> (gx, ggates, gl)
// direction: 0 left_to_right, 1 right_to_left, 2 top_to_bottom, 3 bottom_to_top.
// merge: 0 max (NaN-propagating; the gradient goes to the first direction attaining the max, a
// NaN counting as the max), 1 mean, 2 sum, 3 none (out is (B, 4, C, H, W) and doubles as hs).
// gl is an empty tensor when there is no input weight.
//
// Layout: every (b, c) plane is scanned by one thread (at::parallel_for over B*C planes). A scan
// runs over "lines" of n contiguous values: vertical directions read the plane as it is,
// horizontal ones transpose it into per-thread scratch (SSE 4x4 tiles) and back. The raw gates
// are read once per plane; each line's normalised gates live in a small line buffer.
// The backward is one reverse sweep per direction that carries the adjoint of the current line
// and writes every gradient of that line (x, raw gates through the normalisation, input
// weight). Gradients of gates (input weights) shared over channels are reduced into one
// accumulator per thread, never into a C-times temporary.

#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

namespace spn {
namespace {

enum Norm : int { N_NONE = 0, N_CLIP = 1, N_ALWAYS = 2, N_GSPN = 3 };
constexpr double kAlwaysEps = 1e-6;  // spn.ops.normalize.ALWAYS_EPS
constexpr double kGspnEps = 1e-7;    // spn.ops.normalize.GSPN_EPS

// ---------------------------------------------------------------------------------------------
// transposes: dst[c * rows + r] (=|+=) src[r * cols + c]

template <typename T>
inline void transpose_plane(const T* __restrict__ src, int64_t rows, int64_t cols, T* __restrict__ dst, bool acc) {
  constexpr int64_t BS = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += BS) {
    const int64_t r1 = std::min(rows, r0 + BS);
    for (int64_t c0 = 0; c0 < cols; c0 += BS) {
      const int64_t c1 = std::min(cols, c0 + BS);
      if (acc) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] += src[r * cols + c];
      } else {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
      }
    }
  }
}

#if defined(__SSE2__)
template <bool ACC>
inline void transpose_f32(const float* __restrict__ src, int64_t rows, int64_t cols, float* __restrict__ dst) {
  constexpr int64_t BS = 16;
  const int64_t r4 = rows & ~int64_t(3), c4 = cols & ~int64_t(3);
  auto put = [](float* p, __m128 v) {
    if (ACC) v = _mm_add_ps(v, _mm_loadu_ps(p));
    _mm_storeu_ps(p, v);
  };
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
          put(dst + c * rows + r, a);
          put(dst + (c + 1) * rows + r, b);
          put(dst + (c + 2) * rows + r, e);
          put(dst + (c + 3) * rows + r, f);
        }
    }
  }
  for (int64_t r = 0; r < r4; ++r)  // right edge
    for (int64_t c = c4; c < cols; ++c) {
      if (ACC) dst[c * rows + r] += src[r * cols + c];
      else dst[c * rows + r] = src[r * cols + c];
    }
  for (int64_t r = r4; r < rows; ++r)  // bottom edge
    for (int64_t c = 0; c < cols; ++c) {
      if (ACC) dst[c * rows + r] += src[r * cols + c];
      else dst[c * rows + r] = src[r * cols + c];
    }
}

template <>
inline void transpose_plane<float>(const float* __restrict__ src, int64_t rows, int64_t cols, float* __restrict__ dst,
                                   bool acc) {
  if (acc) transpose_f32<true>(src, rows, cols, dst);
  else transpose_f32<false>(src, rows, cols, dst);
}
#endif

template <typename T>
inline void put_line(T* __restrict__ dst, const T* __restrict__ src, int64_t n, bool acc) {
  if (acc) {
    for (int64_t k = 0; k < n; ++k) dst[k] += src[k];
  } else {
    std::copy(src, src + n, dst);
  }
}

// NaN-propagating max(a, floor): a NaN stays NaN (as torch.clamp)
template <typename T>
inline T floor_at(T a, T fl) { return a < fl ? fl : a; }

// exp for float that vectorises (no libm call): exp(x) = 2^n exp(f), n = round(x / ln 2),
// f = x - n ln 2 in [-ln2/2, ln2/2], a degree-7 Taylor polynomial (relative error ~1e-7).
// x is clamped to [-87.3, 88.3] (a NaN passes through and gives NaN).
inline float fast_exp(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  const float f = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * f + 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f;
  p = p * f + 1.0f / 24.0f;
  p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int32_t i = __builtin_bit_cast(int32_t, t) - 0x4B400000;  // n as an integer
  const float scale = __builtin_bit_cast(float, (i + 127) << 23);
  return p * scale;
}

inline float sigmoid(float r) { return 1.0f / (1.0f + fast_exp(-r)); }
inline double sigmoid(double r) { return 1.0 / (1.0 + std::exp(-r)); }

// d|r|/dr as torch's abs backward (0 at 0; a NaN r makes the whole pixel NaN anyway)
template <typename T>
inline T sgn(T r) { return T(r > T(0)) - T(r < T(0)); }

// ---------------------------------------------------------------------------------------------
// Scan geometry: L lines of n values; line t (in scan order) sits at memory line
// (rev ? L - 1 - t : t). A line starts a chunk when t % chunk == 0 (chunk 0: only t = 0).
struct Geo {
  int64_t L, n;
  bool rev;
  int64_t chunk;
  int64_t line(int64_t t) const { return (rev ? L - 1 - t : t) * n; }
  bool first(int64_t t) const { return chunk > 0 ? (t % chunk) == 0 : t == 0; }
};

// Normalised gates of one pixel from its raw gates (V0 / V2: slots 0 / 2 valid). a1, a2: what
// the backward's chain rule needs besides g (clip / always: 1 / max(s, floor) and whether the
// floor is inactive; gspn: max(S, eps) and whether S >= eps).
template <typename T, int K, int NORM, bool V0, bool V2>
inline void norm_pixel(T r0, T r1, T r2, T& g0, T& g1, T& g2, T& a1, T& a2) {
  if (NORM == N_CLIP || NORM == N_ALWAYS) {  // every slot counts, valid or not
    const T fl = NORM == N_CLIP ? T(1) : T(kAlwaysEps);
    const T s = K == 1 ? std::abs(r1) : std::abs(r0) + std::abs(r1) + std::abs(r2);
    const T inv = T(1) / floor_at(s, fl);
    g1 = r1 * inv;
    if (K == 3) {
      g0 = r0 * inv;
      g2 = r2 * inv;
    }
    a1 = inv;
    a2 = s >= fl ? T(1) : T(0);  // torch.clamp passes the gradient where s >= min
    return;
  }
  // gspn: the valid slots only
  const bool v0 = K == 3 && V0, v2 = K == 3 && V2;
  const T s0 = v0 ? sigmoid(r0) : T(0), s1 = sigmoid(r1), s2 = v2 ? sigmoid(r2) : T(0);
  const T S = (v0 ? s0 + s1 : s1) + (v2 ? s2 : T(0));
  const T M = floor_at(S, T(kGspnEps));
  const T inv = T(1) / M;
  g1 = s1 * inv;
  if (K == 3) {
    g0 = v0 ? s0 * inv : T(0);
    g2 = v2 ? s2 * inv : T(0);
  }
  a1 = M;
  a2 = S >= T(kGspnEps) ? T(1) : T(0);
}

// The chain rule of the fused backward, from the normalised gates g and norm_pixel's a1, a2
// (the raw gates are not needed: sign(r_j) = sign(g_j), and for gspn sigma_j = g_j * max(S, eps)).
template <typename T, int K, int NORM, bool V0, bool V2>
inline void chain_fused(T G0, T G1, T G2, T g0, T g1, T g2, T a1, T a2, T& o0, T& o1, T& o2) {
  const bool v0 = K == 3 && V0, v2 = K == 3 && V2;
  if (NORM == N_NONE) {
    o0 = G0;
    o1 = G1;
    o2 = G2;
    return;
  }
  T dot = G1 * g1;
  if (v0) dot = G0 * g0 + dot;
  if (v2) dot = dot + G2 * g2;
  const T sd = a2 != T(0) ? dot : T(0);
  if (NORM == N_CLIP || NORM == N_ALWAYS) {
    o1 = (G1 - sgn(g1) * sd) * a1;
    if (K == 3) {
      o0 = (G0 - sgn(g0) * sd) * a1;
      o2 = (G2 - sgn(g2) * sd) * a1;
    }
    return;
  }
  // gspn: d g_j / d r_k = sigma_k (1 - sigma_k) (delta_jk - g_j [S >= eps]) / max(S, eps)
  o1 = g1 * (T(1) - g1 * a1) * (G1 - sd);
  if (K == 3) {
    o0 = v0 ? g0 * (T(1) - g0 * a1) * (G0 - sd) : T(0);
    o2 = v2 ? g2 * (T(1) - g2 * a1) * (G2 - sd) : T(0);
  }
}

// Normalised gates of one line (the raw gates r0..r2 of its n pixels) into g0..g2.
// Slot 0 reads k - 1 (invalid at k = 0), slot 2 reads k + 1 (invalid at k = n - 1).
template <typename T, int K, int NORM, bool AUX = false>
void norm_line(const T* __restrict__ r0, const T* __restrict__ r1, const T* __restrict__ r2, T* __restrict__ g0,
               T* __restrict__ g1, T* __restrict__ g2, int64_t n, T* __restrict__ a1 = nullptr,
               T* __restrict__ a2 = nullptr) {
  T u1, u2;  // aux values, discarded unless AUX
  auto A1 = [&](int64_t k) -> T& { return AUX ? a1[k] : u1; };
  auto A2 = [&](int64_t k) -> T& { return AUX ? a2[k] : u2; };
  if (K == 1) {
    for (int64_t k = 0; k < n; ++k) {
      T w0, w2;
      norm_pixel<T, 1, NORM, false, false>(T(0), r0[k], T(0), w0, g0[k], w2, A1(k), A2(k));
    }
    return;
  }
  if (n == 1) {
    norm_pixel<T, 3, NORM, false, false>(r0[0], r1[0], r2[0], g0[0], g1[0], g2[0], A1(0), A2(0));
    return;
  }
  norm_pixel<T, 3, NORM, false, true>(r0[0], r1[0], r2[0], g0[0], g1[0], g2[0], A1(0), A2(0));
  for (int64_t k = 1; k < n - 1; ++k)
    norm_pixel<T, 3, NORM, true, true>(r0[k], r1[k], r2[k], g0[k], g1[k], g2[k], A1(k), A2(k));
  const int64_t e = n - 1;
  norm_pixel<T, 3, NORM, true, false>(r0[e], r1[e], r2[e], g0[e], g1[e], g2[e], A1(e), A2(e));
}

// Gradient of the raw gates of one (b, d) gate plane shared by every channel, from the
// channel-summed gradients G of its normalised gates (the chain rule is linear in G, so it runs
// once per pixel, not once per channel). Original (H, W) layout; first lines of a chunk get 0.
template <typename T, int K, int NORM>
void chain_plane(const T* G, const T* r, T* dr, int64_t HW, int dir, int64_t H, int64_t W, int64_t chunk) {
  const bool hor = dir < 2, rev = dir == 1 || dir == 3;
  const int64_t L = hor ? W : H, n = hor ? H : W;
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const int64_t i = y * W + x, m = hor ? x : y, k = hor ? y : x;
      const int64_t t = rev ? L - 1 - m : m;
      const bool first = chunk > 0 ? (t % chunk) == 0 : t == 0;
      T o0 = T(0), o1 = T(0), o2 = T(0);
      if (!first) {
        const T r0 = K == 3 ? r[i] : T(0), r1 = K == 3 ? r[HW + i] : r[i], r2 = K == 3 ? r[2 * HW + i] : T(0);
        const T G0 = K == 3 ? G[i] : T(0), G1 = K == 3 ? G[HW + i] : G[i], G2 = K == 3 ? G[2 * HW + i] : T(0);
        T g0 = T(0), g1 = T(0), g2 = T(0);
        const bool v0 = k > 0, v2 = k < n - 1;
        auto run = [&](auto V0c, auto V2c) {
          constexpr bool V0 = decltype(V0c)::value, V2 = decltype(V2c)::value;
          T a1, a2;
          norm_pixel<T, K, NORM, V0, V2>(r0, r1, r2, g0, g1, g2, a1, a2);
          chain_fused<T, K, NORM, V0, V2>(G0, G1, G2, g0, g1, g2, a1, a2, o0, o1, o2);
        };
        if (v0 && v2) run(std::true_type{}, std::true_type{});
        else if (v0) run(std::true_type{}, std::false_type{});
        else if (v2) run(std::false_type{}, std::true_type{});
        else run(std::false_type{}, std::false_type{});
      }
      if (K == 3) {
        dr[i] = o0;
        dr[HW + i] = o1;
        dr[2 * HW + i] = o2;
      } else {
        dr[i] = o1;
      }
    }
}

// Per-thread buffers (uninitialised; every use writes before it reads).
template <typename T>
struct Buf {
  std::unique_ptr<T[]> p;
  int64_t size = 0;
  T* get(int64_t n) {
    if (n > size) {
      p.reset(new T[n]);
      size = n;
    }
    return p.get();
  }
};

template <typename T>
struct Work {
  // line buffers
  Buf<T> gcur, gnext, dcur, dnext, lx, lr, ll, a1, a2;
  // plane scratch (horizontal directions)
  Buf<T> xT, hT, ghT, gxT, grT, glT, tmp, gm;
  Buf<T> gT[2], lT[2];
  int64_t gT_key[2] = {-1, -1}, lT_key[2] = {-1, -1};  // batch index whose shared gates gT holds
  Buf<T> gN[4], graw;  // shared gates normalised once per batch item, in scan layout
  int64_t gN_key[4] = {-1, -1, -1, -1};
};

// ---------------------------------------------------------------------------------------------
// forward of one direction in scan layout
template <typename T, int K, int NORM, bool HASL>
void scan_fwd(const T* __restrict__ x, const T* r, int64_t rps, const T* __restrict__ l, T* h, const Geo& G,
              Work<T>& w) {
  const int64_t n = G.n;
  T* gb = NORM == N_NONE ? nullptr : w.gcur.get(K * n);
  for (int64_t t = 0; t < G.L; ++t) {
    const int64_t o = G.line(t);
    const T* __restrict__ xr = x + o;
    T* __restrict__ hr = h + o;
    if (G.first(t)) {
      if (HASL) {
        for (int64_t k = 0; k < n; ++k) hr[k] = l[o + k] * xr[k];
      } else {
        std::copy(xr, xr + n, hr);
      }
      continue;
    }
    const T* __restrict__ hp = h + G.line(t - 1);
    const T *g0, *g1 = nullptr, *g2 = nullptr;
    if (NORM == N_NONE) {
      g0 = r + o;
      if (K == 3) {
        g1 = r + rps + o;
        g2 = r + 2 * rps + o;
      }
    } else {
      norm_line<T, K, NORM>(r + o, K == 3 ? r + rps + o : nullptr, K == 3 ? r + 2 * rps + o : nullptr, gb, gb + n,
                            gb + 2 * n, n);
      g0 = gb;
      g1 = gb + n;
      g2 = gb + 2 * n;
    }
    const T* __restrict__ lr_ = HASL ? l + o : nullptr;
    auto base = [&](int64_t k, T s) { return HASL ? lr_[k] * xr[k] : (T(1) - s) * xr[k]; };
    if (K == 1) {
      for (int64_t k = 0; k < n; ++k) hr[k] = base(k, g0[k]) + g0[k] * hp[k];
      continue;
    }
    if (n == 1) {
      hr[0] = base(0, g1[0]) + g1[0] * hp[0];
      continue;
    }
    hr[0] = base(0, g1[0] + g2[0]) + (g1[0] * hp[0] + g2[0] * hp[1]);
    for (int64_t k = 1; k < n - 1; ++k) {
      const T a = g0[k], b = g1[k], c = g2[k];
      hr[k] = base(k, (a + b) + c) + ((a * hp[k - 1] + b * hp[k]) + c * hp[k + 1]);
    }
    const int64_t e = n - 1;
    hr[e] = base(e, g0[e] + g1[e]) + (g0[e] * hp[e - 1] + g1[e] * hp[e]);
  }
}

// Gradient of one pixel of a line that has a previous line. V0 / V2: slots 0 / 2 valid.
// hp0..hp2: the previous line's values the slots read; g: normalised gates; a1, a2: see
// norm_pixel. Out: ox (grad x), ol (grad l), o0..o2 (grad of the raw gates).
template <typename T, int K, int NORM, bool HASL, bool V0, bool V2>
inline void bwd_pixel(T d, T xv, T lv, T hp0, T hp1, T hp2, T g0, T g1, T g2, T a1, T a2, T& ox, T& ol, T& o0, T& o1,
                      T& o2) {
  const bool v0 = K == 3 && V0, v2 = K == 3 && V2;
  const T dx = d * xv;
  const T G0 = v0 ? (HASL ? d * hp0 : d * hp0 - dx) : T(0);
  const T G1 = HASL ? d * hp1 : d * hp1 - dx;
  const T G2 = v2 ? (HASL ? d * hp2 : d * hp2 - dx) : T(0);
  if (HASL) {
    ox = d * lv;
    ol = dx;
  } else {
    T s = v0 ? g0 + g1 : g1;
    if (v2) s = s + g2;
    ox = d * (T(1) - s);
  }
  chain_fused<T, K, NORM, V0, V2>(G0, G1, G2, g0, g1, g2, a1, a2, o0, o1, o2);
}

// Gradients of one line that has a previous line (restrict pointers, so that it vectorises).
template <typename T, int K, int NORM, bool HASL>
void bwd_line(int64_t n, const T* __restrict__ D, const T* __restrict__ x, const T* __restrict__ l,
              const T* __restrict__ hp, const T* __restrict__ g0, const T* __restrict__ g1, const T* __restrict__ g2,
              const T* __restrict__ a1, const T* __restrict__ a2, T* __restrict__ ox, T* __restrict__ ol,
              T* __restrict__ o0, T* __restrict__ o1, T* __restrict__ o2) {
  constexpr bool AUX = NORM != N_NONE;
  auto A1 = [&](int64_t k) { return AUX ? a1[k] : T(0); };
  auto A2 = [&](int64_t k) { return AUX ? a2[k] : T(0); };
  auto L = [&](int64_t k) { return HASL ? l[k] : T(0); };
  T dummy_l, dummy0, dummy2;
  if (K == 1) {
    for (int64_t k = 0; k < n; ++k) {
      T olv;
      bwd_pixel<T, 1, NORM, HASL, false, false>(D[k], x[k], L(k), T(0), hp[k], T(0), T(0), g0[k], T(0), A1(k), A2(k),
                                                ox[k], olv, dummy0, o0[k], dummy2);
      if (HASL) ol[k] = olv;
    }
    return;
  }
  T& ol0 = HASL ? ol[0] : dummy_l;
  if (n == 1) {
    bwd_pixel<T, 3, NORM, HASL, false, false>(D[0], x[0], L(0), T(0), hp[0], T(0), g0[0], g1[0], g2[0], A1(0), A2(0),
                                              ox[0], ol0, o0[0], o1[0], o2[0]);
    return;
  }
  bwd_pixel<T, 3, NORM, HASL, false, true>(D[0], x[0], L(0), T(0), hp[0], hp[1], g0[0], g1[0], g2[0], A1(0), A2(0),
                                           ox[0], ol0, o0[0], o1[0], o2[0]);
  for (int64_t k = 1; k < n - 1; ++k) {
    T olv;
    bwd_pixel<T, 3, NORM, HASL, true, true>(D[k], x[k], L(k), hp[k - 1], hp[k], hp[k + 1], g0[k], g1[k], g2[k], A1(k),
                                            A2(k), ox[k], olv, o0[k], o1[k], o2[k]);
    if (HASL) ol[k] = olv;
  }
  const int64_t e = n - 1;
  T& ole = HASL ? ol[e] : dummy_l;
  bwd_pixel<T, 3, NORM, HASL, true, false>(D[e], x[e], L(e), hp[e - 1], hp[e], T(0), g0[e], g1[e], g2[e], A1(e), A2(e),
                                           ox[e], ole, o0[e], o1[e], o2[e]);
}

// One reverse sweep: the adjoint D of each line (from its own output gradient and the next line
// that reads it) and every gradient of that line. Outputs are in the same scan layout, written
// (acc false) or accumulated (acc true).
template <typename T, int K, int NORM, bool HASL>
void scan_bwd(const T* __restrict__ gh, T scale, const T* __restrict__ x, const T* r, int64_t rps,
              const T* __restrict__ l, const T* __restrict__ h, const Geo& G, T* gx, bool accx, T* gr, int64_t grps,
              bool accg, T* gl, bool accl, Work<T>& w) {
  const int64_t n = G.n;
  T* Dc = w.dcur.get(n);
  T* Dn = w.dnext.get(n);
  T* bc = NORM == N_NONE ? nullptr : w.gcur.get(K * n);
  T* bn = NORM == N_NONE ? nullptr : w.gnext.get(K * n);
  T* lx = w.lx.get(n);
  T* lr = w.lr.get(K * n);
  T* ll = HASL ? w.ll.get(n) : nullptr;
  T* a1 = NORM == N_NONE ? nullptr : w.a1.get(n);
  T* a2 = NORM == N_NONE ? nullptr : w.a2.get(n);
  const T* nx[3] = {nullptr, nullptr, nullptr};  // normalised gates of line t + 1
  bool link = false;                               // line t + 1 reads line t
  for (int64_t t = G.L - 1; t >= 0; --t) {
    const int64_t o = G.line(t);
    const T* __restrict__ ghr = gh + o;
    // adjoint of line t
    if (!link) {
      for (int64_t k = 0; k < n; ++k) Dc[k] = ghr[k] * scale;
    } else if (K == 1) {
      const T* __restrict__ a = nx[0];
      for (int64_t k = 0; k < n; ++k) Dc[k] = ghr[k] * scale + a[k] * Dn[k];
    } else if (n == 1) {
      Dc[0] = ghr[0] * scale + nx[1][0] * Dn[0];
    } else {
      const T* __restrict__ a0 = nx[0];
      const T* __restrict__ a1 = nx[1];
      const T* __restrict__ a2 = nx[2];
      Dc[0] = ghr[0] * scale + a1[0] * Dn[0] + a0[1] * Dn[1];
      for (int64_t k = 1; k < n - 1; ++k)
        Dc[k] = ghr[k] * scale + a1[k] * Dn[k] + a0[k + 1] * Dn[k + 1] + a2[k - 1] * Dn[k - 1];
      const int64_t e = n - 1;
      Dc[e] = ghr[e] * scale + a1[e] * Dn[e] + a2[e - 1] * Dn[e - 1];
    }
    const T* __restrict__ xr = x + o;
    const T* __restrict__ lrow = HASL ? l + o : nullptr;
    if (G.first(t)) {
      for (int64_t k = 0; k < n; ++k) lx[k] = HASL ? Dc[k] * lrow[k] : Dc[k];
      if (HASL)
        for (int64_t k = 0; k < n; ++k) ll[k] = Dc[k] * xr[k];
      std::fill(lr, lr + K * n, T(0));
      link = false;
    } else {
      const T* r0 = r + o;
      const T* r1 = K == 3 ? r + rps + o : r0;
      const T* r2 = K == 3 ? r + 2 * rps + o : r0;
      const T *g0, *g1, *g2;
      if (NORM == N_NONE) {
        g0 = r0;
        g1 = r1;
        g2 = r2;
      } else {
        norm_line<T, K, NORM, true>(r0, r1, r2, bc, bc + n, bc + 2 * n, n, a1, a2);
        g0 = bc;
        g1 = K == 3 ? bc + n : bc;
        g2 = K == 3 ? bc + 2 * n : bc;
      }
      bwd_line<T, K, NORM, HASL>(n, Dc, xr, lrow, h + G.line(t - 1), g0, g1, g2, a1, a2, lx, ll, lr,
                                 K == 3 ? lr + n : nullptr, K == 3 ? lr + 2 * n : nullptr);
      nx[0] = g0;
      nx[1] = g1;
      nx[2] = g2;
      link = true;
      std::swap(bc, bn);  // line t's normalised gates are now "next"
    }
    put_line(gx + o, lx, n, accx);
    for (int64_t j = 0; j < K; ++j) put_line(gr + j * grps + o, lr + j * n, n, accg);
    if (HASL) put_line(gl + o, ll, n, accl);
    std::swap(Dc, Dn);
  }
}

// ---------------------------------------------------------------------------------------------
// problem setup shared by the ops

struct Problem {
  int64_t B, C, H, W, HW, ND, K, Cg, Cl;
  int dirs[4];
  int norm;
  int64_t chunk;
  bool hasl;
  bool horizontal(int d) const { return dirs[d] < 2; }
  // shared gates with a normalisation: normalised once per batch item, chain rule after the reduction
  bool prenorm() const { return norm != N_NONE && Cg == 1 && C > 1; }
  bool any_horizontal() const {
    for (int d = 0; d < ND; ++d)
      if (dirs[d] < 2) return true;
    return false;
  }
  Geo geo(int d) const {
    const int dir = dirs[d];
    const bool rev = dir == 1 || dir == 3;
    return dir < 2 ? Geo{W, H, rev, chunk} : Geo{H, W, rev, chunk};
  }
  // raw gates of plane (b, c), direction slot d; slot stride Cg * HW
  int64_t gate_off(int64_t b, int64_t c, int d) const { return ((b * ND + d) * K * Cg + (Cg == 1 ? 0 : c)) * HW; }
  int64_t l_off(int64_t b, int64_t c, int d) const { return ((b * ND + d) * Cl + (Cl == 1 ? 0 : c)) * HW; }
};

template <typename F>
void dispatch(const Problem& P, F&& f) {
  auto with_l = [&](auto Kc, auto Nc) {
    if (P.hasl) f(Kc, Nc, std::true_type{});
    else f(Kc, Nc, std::false_type{});
  };
  auto with_norm = [&](auto Kc) {
    switch (P.norm) {
      case N_NONE: with_l(Kc, std::integral_constant<int, N_NONE>{}); break;
      case N_CLIP: with_l(Kc, std::integral_constant<int, N_CLIP>{}); break;
      case N_ALWAYS: with_l(Kc, std::integral_constant<int, N_ALWAYS>{}); break;
      default: with_l(Kc, std::integral_constant<int, N_GSPN>{}); break;
    }
  };
  if (P.K == 1) with_norm(std::integral_constant<int, 1>{});
  else with_norm(std::integral_constant<int, 3>{});
}

// Denormals: adjoints decay geometrically along a scan and reach the subnormal range, where x86
// arithmetic is many times slower. Each worker flushes them to zero (FTZ/DAZ) while it runs a
// kernel and restores its previous mode afterwards.
struct FlushDenormals {
#if defined(__SSE2__)
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Gates (and input weights) of a horizontal direction in scan layout. Shared ones (Cg = 1) are
// transposed once per batch item and thread, not once per channel.
template <typename T>
const T* gates_T(const Problem& P, Work<T>& w, int d, int64_t b, const T* g, bool shared) {
  const int slot = P.dirs[d];  // 0 or 1
  T* dst = w.gT[slot].get(P.K * P.HW);
  if (!(shared && w.gT_key[slot] == b)) {
    for (int64_t j = 0; j < P.K; ++j) transpose_plane(g + j * P.Cg * P.HW, P.H, P.W, dst + j * P.HW, false);
    w.gT_key[slot] = shared ? b : -1;
  }
  return dst;
}

template <typename T>
const T* l_T(const Problem& P, Work<T>& w, int d, int64_t b, const T* l, bool shared) {
  const int slot = P.dirs[d];
  T* dst = w.lT[slot].get(P.HW);
  if (!(shared && w.lT_key[slot] == b)) {
    transpose_plane(l, P.H, P.W, dst, false);
    w.lT_key[slot] = shared ? b : -1;
  }
  return dst;
}

// Shared gates (Cg = 1, C > 1) normalised once per batch item and thread, in the scan layout
// of direction d (the scan then runs them as given; the chain rule runs once per pixel after
// the channel reduction, see chain_plane).
template <typename T, int K, int NORM>
const T* shared_norm_gates(const Problem& P, Work<T>& w, int d, int64_t b, const T* g) {
  const int64_t HW = P.HW;
  T* dst = w.gN[d].get(K * HW);
  if (w.gN_key[d] == b) return dst;
  const Geo G = P.geo(d);
  const T* src = g;
  if (P.horizontal(d)) {
    T* tmp = w.graw.get(K * HW);
    for (int64_t j = 0; j < K; ++j) transpose_plane(g + j * HW, P.H, P.W, tmp + j * HW, false);
    src = tmp;
  }
  const int64_t n = G.n;
  for (int64_t m = 0; m < G.L; ++m) {
    const int64_t o = m * n;
    norm_line<T, K, NORM>(src + o, K == 3 ? src + HW + o : src + o, K == 3 ? src + 2 * HW + o : src + o, dst + o,
                          K == 3 ? dst + HW + o : dst + o, K == 3 ? dst + 2 * HW + o : dst + o, n);
  }
  w.gN_key[d] = b;
  return dst;
}

// Number of partial sums a gradient shared over channels is reduced into (fixed, so that the
// result does not depend on the thread count).
inline int64_t reduce_groups(int64_t C) { return std::min<int64_t>(C, 4); }

// Forward over every plane. Direction d's map goes to hd(b, c, d) when that is not null;
// merge: 0 max, 1 mean, 2 sum into out; 3 none (hd is the output).
template <typename T>
void run_fwd(const Problem& P, const T* xp, const T* gp, const T* lp, T* out, int merge, T* hsp, bool hs_bdc) {
  const int64_t HW = P.HW, BC = P.B * P.C;
  const bool prenorm = P.prenorm();
  at::parallel_for(0, BC, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals ftz;
    Work<T> w;
    dispatch(P, [&](auto Kc, auto Nc, auto Lc) {
      constexpr int K = decltype(Kc)::value;
      constexpr int NORM = decltype(Nc)::value;
      constexpr bool HASL = decltype(Lc)::value;
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / P.C, c = s % P.C;
        const T* xs = xp + s * HW;
        const T* xT = nullptr;
        if (P.any_horizontal()) {
          T* buf = w.xT.get(HW);
          transpose_plane(xs, P.H, P.W, buf, false);
          xT = buf;
        }
        T* o = merge == 3 ? nullptr : out + s * HW;
        for (int d = 0; d < P.ND; ++d) {
          T* hd;
          if (hsp != nullptr) hd = hsp + (hs_bdc ? (b * P.ND + d) * P.C + c : d * BC + s) * HW;
          else hd = d == 0 ? o : w.tmp.get(HW);
          const T* g = gp + P.gate_off(b, c, d);
          const T* l = HASL ? lp + P.l_off(b, c, d) : nullptr;
          const Geo G = P.geo(d);
          const bool hor = P.horizontal(d);
          const T* xin = hor ? xT : xs;
          const T* lin = !HASL ? nullptr : (hor ? l_T(P, w, d, b, l, P.Cl == 1) : l);
          T* hout = hor ? w.hT.get(HW) : hd;
          if (prenorm) {
            scan_fwd<T, K, N_NONE, HASL>(xin, shared_norm_gates<T, K, NORM>(P, w, d, b, g), HW, lin, hout, G, w);
          } else if (hor) {
            scan_fwd<T, K, NORM, HASL>(xin, gates_T(P, w, d, b, g, P.Cg == 1), HW, lin, hout, G, w);
          } else {
            scan_fwd<T, K, NORM, HASL>(xin, g, P.Cg * HW, lin, hout, G, w);
          }
          if (hor) transpose_plane(hout, P.W, P.H, hd, false);
          if (merge == 3) continue;
          if (d == 0) {
            if (hd != o) std::copy(hd, hd + HW, o);
          } else if (merge == 0) {
            for (int64_t i = 0; i < HW; ++i) o[i] = (hd[i] > o[i] || hd[i] != hd[i]) ? hd[i] : o[i];
          } else {
            for (int64_t i = 0; i < HW; ++i) o[i] += hd[i];
          }
        }
        if (merge == 1)
          for (int64_t i = 0; i < HW; ++i) o[i] *= T(0.25);
      }
    });
  });
}

// Max merge: grad_out goes to the first direction attaining the max; if any direction is NaN at
// a node, to the first NaN one (as torch.max(dim=0)). gm[d * n + i] = go[i] or 0.
template <typename T>
inline void route_max_grad(const T* __restrict__ h0, const T* __restrict__ h1, const T* __restrict__ h2,
                           const T* __restrict__ h3, const T* __restrict__ go, T* __restrict__ gm, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same<T, float>::value) {
    const __m128 ones = _mm_castsi128_ps(_mm_set1_epi32(-1));
    auto sel = [](__m128 m, __m128 a, __m128 b) { return _mm_or_ps(_mm_and_ps(m, a), _mm_andnot_ps(m, b)); };
    for (; i + 4 <= n; i += 4) {
      const __m128 v0 = _mm_loadu_ps(h0 + i), v1 = _mm_loadu_ps(h1 + i);
      const __m128 v2 = _mm_loadu_ps(h2 + i), v3 = _mm_loadu_ps(h3 + i);
      const __m128 g = _mm_loadu_ps(go + i);
      const __m128 n0 = _mm_cmpunord_ps(v0, v0), n1 = _mm_cmpunord_ps(v1, v1);
      const __m128 n2 = _mm_cmpunord_ps(v2, v2), n3 = _mm_cmpunord_ps(v3, v3);
      // NaN-propagating max, in direction order
      __m128 best = v0;
      best = sel(_mm_or_ps(_mm_cmpgt_ps(v1, best), n1), v1, best);
      best = sel(_mm_or_ps(_mm_cmpgt_ps(v2, best), n2), v2, best);
      best = sel(_mm_or_ps(_mm_cmpgt_ps(v3, best), n3), v3, best);
      // first direction attaining it (a NaN attains a NaN max)
      const __m128 e0 = _mm_or_ps(_mm_cmpeq_ps(v0, best), n0);
      const __m128 e1 = _mm_andnot_ps(e0, _mm_or_ps(_mm_cmpeq_ps(v1, best), n1));
      const __m128 e01 = _mm_or_ps(e0, e1);
      const __m128 e2 = _mm_andnot_ps(e01, _mm_or_ps(_mm_cmpeq_ps(v2, best), n2));
      const __m128 e3 = _mm_andnot_ps(_mm_or_ps(e01, e2), ones);
      _mm_storeu_ps(gm + i, _mm_and_ps(e0, g));
      _mm_storeu_ps(gm + n + i, _mm_and_ps(e1, g));
      _mm_storeu_ps(gm + 2 * n + i, _mm_and_ps(e2, g));
      _mm_storeu_ps(gm + 3 * n + i, _mm_and_ps(e3, g));
    }
  }
#endif
  for (; i < n; ++i) {
    const T v0 = h0[i], v1 = h1[i], v2 = h2[i], v3 = h3[i], g = go[i];
    T best = v0;
    best = (v1 > best || v1 != v1) ? v1 : best;
    best = (v2 > best || v2 != v2) ? v2 : best;
    best = (v3 > best || v3 != v3) ? v3 : best;
    const bool e0 = v0 == best || v0 != v0;
    const bool e1 = !e0 && (v1 == best || v1 != v1);
    const bool e2 = !e0 && !e1 && (v2 == best || v2 != v2);
    const bool e3 = !e0 && !e1 && !e2;
    gm[i] = e0 ? g : T(0);
    gm[n + i] = e1 ? g : T(0);
    gm[2 * n + i] = e2 ? g : T(0);
    gm[3 * n + i] = e3 ? g : T(0);
  }
}

// Backward over every plane. gop: the output gradient ((B, C, H, W), or (B, ND, C, H, W) for
// merge 3); hsp: the directional maps ((ND, B, C, H, W), or (B, ND, C, H, W) when hs_bdc).
// ggp / glp: gradients of the gates / input weights; when shared over channels they are
// accumulated into the per-thread partial sums ggpart / glpart (one slice per thread).
template <typename T>
void run_bwd(const Problem& P, const T* gop, const T* xp, const T* gp, const T* lp, const T* hsp, bool hs_bdc,
             int merge, T* gxp, T* ggp, T* glp, T* ggpart, T* glpart) {
  const int64_t HW = P.HW, BC = P.B * P.C;
  const bool gshared = ggpart != nullptr, lshared = glpart != nullptr;
  const bool prenorm = P.prenorm();  // implies gshared
  const int64_t gsz = P.B * P.ND * P.K * HW, lsz = P.B * P.ND * HW;  // one partial slice
  const T scale = merge == 1 ? T(0.25) : T(1);
  // Work units: one (b, c) plane each; with a shared gradient, one (b, group) each, whose planes
  // c = group, group + G, ... accumulate in that order into partial slice `group`. The result
  // is then the same for every thread count.
  const bool grouped = gshared || lshared;
  const int64_t G = grouped ? reduce_groups(P.C) : 1;
  const int64_t units = grouped ? P.B * G : BC;
  at::parallel_for(0, units, 1, [&](int64_t ubegin, int64_t uend) {
    FlushDenormals ftz;
    Work<T> w;
    dispatch(P, [&](auto Kc, auto Nc, auto Lc) {
      constexpr int K = decltype(Kc)::value;
      constexpr int NORM = decltype(Nc)::value;
      constexpr bool HASL = decltype(Lc)::value;
      for (int64_t u = ubegin; u < uend; ++u)
      for (int64_t c0 = grouped ? u % G : u % P.C, cstep = grouped ? G : P.C, c = c0; c < P.C; c += cstep) {
        const int64_t b = grouped ? u / G : u / P.C, s = b * P.C + c, grp = grouped ? c0 : 0;
        const T* xs = xp + s * HW;
        const T* xT = nullptr;
        if (P.any_horizontal()) {
          T* buf = w.xT.get(HW);
          transpose_plane(xs, P.H, P.W, buf, false);
          xT = buf;
        }
        auto hplane = [&](int d) { return hsp + (hs_bdc ? (b * P.ND + d) * P.C + c : d * BC + s) * HW; };
        T* gm = nullptr;
        if (merge == 0) {
          gm = w.gm.get(4 * HW);
          route_max_grad<T>(hplane(0), hplane(1), hplane(2), hplane(3), gop + s * HW, gm, HW);
        }
        bool ghT_shared = false;  // ghT holds the transposed grad_out (mean / sum)
        T* gxs = gxp + s * HW;
        for (int d = 0; d < P.ND; ++d) {
          const T* gh;
          if (merge == 0) gh = gm + d * HW;
          else if (merge == 3) gh = gop + ((b * P.ND + d) * P.C + c) * HW;
          else gh = gop + s * HW;
          const T* g = gp + P.gate_off(b, c, d);
          const T* l = HASL ? lp + P.l_off(b, c, d) : nullptr;
          T* gg = gshared ? ggpart + grp * gsz + (b * P.ND + d) * P.K * HW : ggp + P.gate_off(b, c, d);
          const int64_t ggps = gshared ? HW : P.Cg * HW;
          T* gl = !HASL ? nullptr : (lshared ? glpart + grp * lsz + (b * P.ND + d) * HW : glp + P.l_off(b, c, d));
          const bool accx = d > 0;
          const Geo G = P.geo(d);
          const T* hd = hplane(d);
          if (!P.horizontal(d)) {
            if (prenorm)
              scan_bwd<T, K, N_NONE, HASL>(gh, scale, xs, shared_norm_gates<T, K, NORM>(P, w, d, b, g), HW, l, hd, G,
                                           gxs, accx, gg, ggps, gshared, gl, lshared, w);
            else
              scan_bwd<T, K, NORM, HASL>(gh, scale, xs, g, P.Cg * HW, l, hd, G, gxs, accx, gg, ggps, gshared, gl,
                                         lshared, w);
            continue;
          }
          T* ghT = w.ghT.get(HW);
          const bool same_gh = merge == 1 || merge == 2;
          if (!(same_gh && ghT_shared)) transpose_plane(gh, P.H, P.W, ghT, false);
          ghT_shared = same_gh;
          T* hT = w.hT.get(HW);
          transpose_plane(hd, P.H, P.W, hT, false);
          const T* lT = HASL ? l_T(P, w, d, b, l, P.Cl == 1) : nullptr;
          T* gxT = w.gxT.get(HW);
          T* grT = w.grT.get(P.K * HW);
          T* glT = HASL ? w.glT.get(HW) : nullptr;
          if (prenorm)
            scan_bwd<T, K, N_NONE, HASL>(ghT, scale, xT, shared_norm_gates<T, K, NORM>(P, w, d, b, g), HW, lT, hT, G,
                                         gxT, false, grT, HW, false, glT, false, w);
          else
            scan_bwd<T, K, NORM, HASL>(ghT, scale, xT, gates_T(P, w, d, b, g, P.Cg == 1), HW, lT, hT, G, gxT, false,
                                       grT, HW, false, glT, false, w);
          transpose_plane(gxT, P.W, P.H, gxs, accx);
          for (int64_t j = 0; j < P.K; ++j) transpose_plane(grT + j * HW, P.W, P.H, gg + j * ggps, gshared);
          if (HASL) transpose_plane(glT, P.W, P.H, gl, lshared);
        }
      }
    });
  });
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

int64_t check_l(const at::Tensor& x, const std::optional<at::Tensor>& l, int64_t ndirs) {
  if (!l.has_value()) return 0;
  const at::Tensor& t = *l;
  const int64_t want = ndirs == 1 ? 4 : 5;
  TORCH_CHECK(t.device().is_cpu(), "spn: CPU kernel got a non-CPU input_weight");
  TORCH_CHECK(t.dim() == want, "spn: input_weight must have ", want, " dims, got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "spn: x and input_weight must share a dtype");
  const int64_t Cl = t.size(want - 3);
  TORCH_CHECK(t.size(0) == x.size(0) && t.size(want - 2) == x.size(2) && t.size(want - 1) == x.size(3) &&
                  (ndirs == 1 || t.size(1) == 4),
              "spn: input_weight ", t.sizes(), " does not match x ", x.sizes());
  TORCH_CHECK(Cl == 1 || Cl == x.size(1), "spn: input_weight must have 1 or C channels, got ", Cl);
  return Cl;
}

void check_modes(int64_t normalize, int64_t chunk) {
  TORCH_CHECK(normalize >= 0 && normalize <= 3, "spn: normalize must be 0 (none), 1 (clip), 2 (always) or 3 (gspn), got ",
              normalize);
  TORCH_CHECK(chunk >= 0, "spn: chunk must be >= 0 (0: one chunk), got ", chunk);
}

Problem make_problem(const at::Tensor& x, const at::Tensor& gates, int64_t nd, int64_t Cl, int64_t direction,
                     int64_t normalize, int64_t chunk) {
  Problem P;
  P.B = x.size(0);
  P.C = x.size(1);
  P.H = x.size(2);
  P.W = x.size(3);
  P.HW = P.H * P.W;
  P.ND = nd;
  const int64_t o = nd == 1 ? 0 : 1;
  P.K = gates.size(o + 1);
  P.Cg = gates.size(o + 2);
  P.Cl = Cl;
  for (int d = 0; d < 4; ++d) P.dirs[d] = nd == 1 ? int(direction) : d;
  P.norm = int(normalize);
  P.chunk = chunk;
  P.hasl = Cl > 0;
  return P;
}

at::Tensor contig(const at::Tensor& t, at::ScalarType st) { return t.to(st).contiguous(); }

// gradient buffers of gates / input weights: direct, or per-thread partials when shared over C
struct GradBufs {
  at::Tensor gg, gl, ggpart, glpart;
};

GradBufs make_grad_bufs(const Problem& P, const at::Tensor& gates, const std::optional<at::Tensor>& l,
                        const at::TensorOptions& opt) {
  GradBufs g;
  const int64_t T = reduce_groups(P.C);
  const bool gshared = P.Cg == 1 && P.C > 1, lshared = P.hasl && P.Cl == 1 && P.C > 1;
  g.gg = at::empty(gates.sizes(), opt);
  if (gshared) g.ggpart = at::zeros({T, P.B * P.ND * P.K * P.HW}, opt);
  if (P.hasl) {
    g.gl = at::empty(l->sizes(), opt);
    if (lshared) g.glpart = at::zeros({T, P.B * P.ND * P.HW}, opt);
  } else {
    g.gl = at::empty({0}, opt);
  }
  return g;
}

// Reduce the per-thread partial sums. For shared gates with a normalisation the partials hold
// the gradient of the normalised gates; the chain rule to the raw gates runs here, once.
void finish_grad_bufs(GradBufs& g, const Problem& P, const at::Tensor& gates) {
  if (g.glpart.defined()) g.gl.view({-1}).copy_(g.glpart.sum(0));
  if (!g.ggpart.defined()) return;
  if (!P.prenorm()) {
    g.gg.view({-1}).copy_(g.ggpart.sum(0));
    return;
  }
  const at::Tensor Gsum = g.ggpart.sum(0);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "spn_chain", [&] {
    const scalar_t* Gp = Gsum.data_ptr<scalar_t>();
    const scalar_t* rp = gates.data_ptr<scalar_t>();
    scalar_t* op = g.gg.data_ptr<scalar_t>();
    at::parallel_for(0, P.B * P.ND, 1, [&](int64_t begin, int64_t end) {
      dispatch(P, [&](auto Kc, auto Nc, auto) {
        constexpr int K = decltype(Kc)::value;
        constexpr int NORM = decltype(Nc)::value;
        for (int64_t i = begin; i < end; ++i) {
          const int64_t off = i * K * P.HW;  // (b, d) plane of (B, ND, K, 1, H, W)
          chain_plane<scalar_t, K, NORM>(Gp + off, rp + off, op + off, P.HW, P.dirs[i % P.ND], P.H, P.W, P.chunk);
        }
      });
    });
  });
}

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

// ---------------------------------------------------------------------------------------------
// the ops

at::Tensor propagate_fwd(const at::Tensor& x_, const at::Tensor& gates_, const std::optional<at::Tensor>& l_,
                         int64_t direction, int64_t normalize, int64_t chunk) {
  check_common(x_, gates_, 5);
  TORCH_CHECK(direction >= 0 && direction < 4, "spn: direction must be in 0..3, got ", direction);
  check_modes(normalize, chunk);
  const int64_t Cl = check_l(x_, l_, 1);
  const at::Tensor x = x_.contiguous(), gates = gates_.contiguous();
  const at::Tensor l = Cl ? l_->contiguous() : at::Tensor();
  const Problem P = make_problem(x, gates, 1, Cl, direction, normalize, chunk);
  at::Tensor h = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (h.numel() == 0) return h;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate_fwd", [&] {
    run_fwd<scalar_t>(P, x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(l), nullptr, 3,
                      h.data_ptr<scalar_t>(), true);
  });
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> propagate_bwd(const at::Tensor& grad_h_, const at::Tensor& x_,
                                                             const at::Tensor& gates_,
                                                             const std::optional<at::Tensor>& l_, const at::Tensor& h_,
                                                             int64_t direction, int64_t normalize, int64_t chunk) {
  check_common(x_, gates_, 5);
  TORCH_CHECK(direction >= 0 && direction < 4, "spn: direction must be in 0..3, got ", direction);
  TORCH_CHECK(grad_h_.sizes() == x_.sizes() && h_.sizes() == x_.sizes(), "spn: grad_h/h must match x");
  check_modes(normalize, chunk);
  const int64_t Cl = check_l(x_, l_, 1);
  const at::Tensor x = x_.contiguous(), gates = gates_.contiguous();
  const at::Tensor l = Cl ? l_->contiguous() : at::Tensor();
  const at::Tensor h = contig(h_, x.scalar_type()), gh = contig(grad_h_, x.scalar_type());
  const Problem P = make_problem(x, gates, 1, Cl, direction, normalize, chunk);
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  GradBufs G = make_grad_bufs(P, gates, l_, x.options());
  if (x.numel() == 0) return {gx, G.gg.zero_(), G.gl.zero_()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate_bwd", [&] {
    run_bwd<scalar_t>(P, gh.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(),
                      ptr_or_null<scalar_t>(l), h.data_ptr<scalar_t>(), true, 3, gx.data_ptr<scalar_t>(),
                      G.gg.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(G.gl), ptr_or_null<scalar_t>(G.ggpart),
                      ptr_or_null<scalar_t>(G.glpart));
  });
  finish_grad_bufs(G, P, gates);
  return {gx, G.gg, G.gl};
}

std::tuple<at::Tensor, at::Tensor> propagate4_fwd(const at::Tensor& x_, const at::Tensor& gates_,
                                                  const std::optional<at::Tensor>& l_, int64_t merge,
                                                  int64_t normalize, int64_t chunk, bool save) {
  check_common(x_, gates_, 6);
  TORCH_CHECK(merge >= 0 && merge <= 3, "spn: merge must be 0 (max), 1 (mean), 2 (sum) or 3 (none)");
  check_modes(normalize, chunk);
  const int64_t Cl = check_l(x_, l_, 4);
  const at::Tensor x = x_.contiguous(), gates = gates_.contiguous();
  const at::Tensor l = Cl ? l_->contiguous() : at::Tensor();
  const Problem P = make_problem(x, gates, 4, Cl, 0, normalize, chunk);
  const bool none = merge == 3;
  at::Tensor out = none ? at::empty({P.B, 4, P.C, P.H, P.W}, x.options()) : at::empty_like(x, at::MemoryFormat::Contiguous);
  // merge "none": the output is the directional maps (the autograd formula saves it)
  at::Tensor hs = (save && !none) ? at::empty({4, P.B, P.C, P.H, P.W}, x.options()) : at::empty({0}, x.options());
  if (x.numel() == 0) return {out, hs};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate4_fwd", [&] {
    scalar_t* hsp = none ? out.data_ptr<scalar_t>() : ptr_or_null<scalar_t>(hs);
    run_fwd<scalar_t>(P, x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(l),
                      none ? nullptr : out.data_ptr<scalar_t>(), int(merge), hsp, none);
  });
  return {out, hs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> propagate4_bwd(const at::Tensor& grad_out_, const at::Tensor& x_,
                                                              const at::Tensor& gates_,
                                                              const std::optional<at::Tensor>& l_,
                                                              const at::Tensor& hs_, int64_t merge, int64_t normalize,
                                                              int64_t chunk) {
  check_common(x_, gates_, 6);
  TORCH_CHECK(merge >= 0 && merge <= 3, "spn: merge must be 0 (max), 1 (mean), 2 (sum) or 3 (none)");
  check_modes(normalize, chunk);
  const int64_t Cl = check_l(x_, l_, 4);
  const bool none = merge == 3;
  const auto xs = x_.sizes();
  if (none) {
    TORCH_CHECK(hs_.dim() == 5 && hs_.size(0) == xs[0] && hs_.size(1) == 4 && hs_.size(2) == xs[1] &&
                    hs_.size(3) == xs[2] && hs_.size(4) == xs[3],
                "spn: with merge none, hs must be the forward output (B, 4, C, H, W)");
    TORCH_CHECK(grad_out_.sizes() == hs_.sizes(), "spn: grad_out ", grad_out_.sizes(), " must be (B, 4, C, H, W)");
  } else {
    TORCH_CHECK(hs_.dim() == 5 && hs_.size(0) == 4 && hs_.sizes().slice(1) == xs,
                "spn: hs must be (4, B, C, H, W); run the forward with save=True");
    TORCH_CHECK(grad_out_.sizes() == xs, "spn: grad_out ", grad_out_.sizes(), " must match x ", xs);
  }
  const at::Tensor x = x_.contiguous(), gates = gates_.contiguous();
  const at::Tensor l = Cl ? l_->contiguous() : at::Tensor();
  const at::Tensor hs = contig(hs_, x.scalar_type()), go = contig(grad_out_, x.scalar_type());
  const Problem P = make_problem(x, gates, 4, Cl, 0, normalize, chunk);
  at::Tensor gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  GradBufs G = make_grad_bufs(P, gates, l_, x.options());
  if (x.numel() == 0) return {gx, G.gg.zero_(), G.gl.zero_()};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate4_bwd", [&] {
    run_bwd<scalar_t>(P, go.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(),
                      ptr_or_null<scalar_t>(l), hs.data_ptr<scalar_t>(), none, int(merge), gx.data_ptr<scalar_t>(),
                      G.gg.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(G.gl), ptr_or_null<scalar_t>(G.ggpart),
                      ptr_or_null<scalar_t>(G.glpart));
  });
  finish_grad_bufs(G, P, gates);
  return {gx, G.gg, G.gl};
}

}  // namespace

TORCH_LIBRARY(spn, m) {
  m.def("propagate_fwd(Tensor x, Tensor gates, Tensor? input_weight, int direction, int normalize, int chunk) -> Tensor");
  m.def(
      "propagate_bwd(Tensor grad_h, Tensor x, Tensor gates, Tensor? input_weight, Tensor h, int direction, "
      "int normalize, int chunk) -> (Tensor, Tensor, Tensor)");
  m.def(
      "propagate4_fwd(Tensor x, Tensor gates, Tensor? input_weight, int merge, int normalize, int chunk, bool save) "
      "-> (Tensor, Tensor)");
  m.def(
      "propagate4_bwd(Tensor grad_out, Tensor x, Tensor gates, Tensor? input_weight, Tensor hs, int merge, "
      "int normalize, int chunk) -> (Tensor, Tensor, Tensor)");
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
