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
// scans (lines are rows) vectorise over the contiguous lateral index; horizontal scans walk
// columns with a stride of W, the H rows of a column block staying in cache between columns.
// The backward is one reverse sweep per direction that keeps only two lines of adjoints; it
// needs the forward output h and nothing else.

#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace spn {
namespace {

struct Geom {
  int64_t H, W, L, n, ls, ks;  // lines, line length, line stride, lateral stride
  bool reverse;
  Geom(int64_t H_, int64_t W_, int64_t dir) : H(H_), W(W_) {
    const bool vert = dir >= 2;
    L = vert ? H : W;
    n = vert ? W : H;
    ls = vert ? W : 1;
    ks = vert ? 1 : W;
    reverse = (dir == 1 || dir == 3);
  }
  inline int64_t line(int64_t t) const { return (reverse ? L - 1 - t : t) * ls; }
};

// ---------------------------------------------------------------------------------------------
// forward of one plane, one direction
template <typename T, int K, int64_t KS>
inline void fwd_line(const T* __restrict__ xr, const T* __restrict__ hp, T* __restrict__ hr,
                     const T* __restrict__ g0, const T* __restrict__ g1, const T* __restrict__ g2,
                     int64_t n, int64_t ks_rt) {
  const int64_t ks = KS > 0 ? KS : ks_rt;
  if (K == 1) {
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = k * ks;
      const T xv = xr[i];
      hr[i] = xv + g0[i] * (hp[i] - xv);
    }
    return;
  }
  if (n == 1) {
    const T xv = xr[0];
    hr[0] = xv + g1[0] * (hp[0] - xv);
    return;
  }
  {
    const T xv = xr[0];
    hr[0] = xv + g1[0] * (hp[0] - xv) + g2[0] * (hp[ks] - xv);
  }
  for (int64_t k = 1; k < n - 1; ++k) {
    const int64_t i = k * ks;
    const T xv = xr[i];
    hr[i] = xv + g0[i] * (hp[i - ks] - xv) + g1[i] * (hp[i] - xv) + g2[i] * (hp[i + ks] - xv);
  }
  {
    const int64_t i = (n - 1) * ks;
    const T xv = xr[i];
    hr[i] = xv + g0[i] * (hp[i - ks] - xv) + g1[i] * (hp[i] - xv);
  }
}

template <typename T, int K, int64_t KS>
void fwd_plane_impl(const T* x, const T* g, int64_t gps, T* h, const Geom& G) {
  int64_t o = G.line(0);
  for (int64_t k = 0; k < G.n; ++k) h[o + k * G.ks] = x[o + k * G.ks];
  for (int64_t t = 1; t < G.L; ++t) {
    const int64_t op = o;
    o = G.line(t);
    const T* g0 = g + o;
    const T* g1 = K == 3 ? g + gps + o : g0;
    const T* g2 = K == 3 ? g + 2 * gps + o : g0;
    fwd_line<T, K, KS>(x + o, h + op, h + o, g0, g1, g2, G.n, G.ks);
  }
}

template <typename T>
void fwd_plane(const T* x, const T* g, int64_t gps, T* h, int64_t K, const Geom& G) {
  const bool vert = G.ks == 1;
  if (K == 1) {
    if (vert) fwd_plane_impl<T, 1, 1>(x, g, gps, h, G);
    else fwd_plane_impl<T, 1, 0>(x, g, gps, h, G);
  } else {
    if (vert) fwd_plane_impl<T, 3, 1>(x, g, gps, h, G);
    else fwd_plane_impl<T, 3, 0>(x, g, gps, h, G);
  }
}

// ---------------------------------------------------------------------------------------------
// backward of one plane, one direction: reverse sweep.
// Adjoint of line t: d_t[k] = gh_t[k] + sum over pixels k' of line t+1 that read k of
// g_slot[k'] d_{t+1}[k'].  Then grad_x = d (1 - sum_valid g) (d on the first line) and
// grad_g_j = d (h_prev[j] - x) for valid j (zero on the first line and for invalid j).
//
// GH: how the adjoint of h is read.  0: gh[i] * scale;  1: gh[i] where argmax[i] == dir, else 0.
template <typename T, int K, int64_t KS, int GH, bool ACC>
void bwd_plane_impl(const T* gh, T scale, const uint8_t* am, uint8_t dir, const T* x, const T* g,
                    int64_t gps, const T* h, T* gx, T* gg, int64_t ggps, T* dcur, T* dnext,
                    const Geom& G) {
  const int64_t n = G.n;
  const int64_t ks = KS > 0 ? KS : G.ks;
  for (int64_t t = G.L - 1; t >= 0; --t) {
    const int64_t o = G.line(t);
    // adjoint of this line
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = o + k * ks;
      T d;
      if (GH == 0) d = gh[i] * scale;
      else d = am[i] == dir ? gh[i] : T(0);
      dcur[k] = d;
    }
    if (t < G.L - 1) {
      const int64_t on = G.line(t + 1);
      if (K == 1) {
        const T* gn = g + on;
        for (int64_t k = 0; k < n; ++k) dcur[k] += gn[k * ks] * dnext[k];
      } else {
        const T* gn0 = g + on;
        const T* gn1 = g + gps + on;
        const T* gn2 = g + 2 * gps + on;
        for (int64_t k = 0; k < n; ++k) {
          T a = gn1[k * ks] * dnext[k];
          if (k + 1 < n) a += gn0[(k + 1) * ks] * dnext[k + 1];
          if (k >= 1) a += gn2[(k - 1) * ks] * dnext[k - 1];
          dcur[k] += a;
        }
      }
    }
    if (t == 0) {
      for (int64_t k = 0; k < n; ++k) {
        const int64_t i = o + k * ks;
        if (ACC) gx[i] += dcur[k];
        else gx[i] = dcur[k];
        gg[i] = T(0);
        if (K == 3) {
          gg[ggps + i] = T(0);
          gg[2 * ggps + i] = T(0);
        }
      }
    } else {
      const int64_t op = G.line(t - 1);
      const T* hp = h + op;
      const T* xr = x + o;
      if (K == 1) {
        const T* g0 = g + o;
        T* gg0 = gg + o;
        for (int64_t k = 0; k < n; ++k) {
          const int64_t i = k * ks;
          const T d = dcur[k];
          const T v = d * (T(1) - g0[i]);
          if (ACC) gx[o + i] += v;
          else gx[o + i] = v;
          gg0[i] = d * (hp[i] - xr[i]);
        }
      } else {
        const T* g0 = g + o;
        const T* g1 = g + gps + o;
        const T* g2 = g + 2 * gps + o;
        T* gg0 = gg + o;
        T* gg1 = gg + ggps + o;
        T* gg2 = gg + 2 * ggps + o;
        for (int64_t k = 0; k < n; ++k) {
          const int64_t i = k * ks;
          const T d = dcur[k];
          const T xv = xr[i];
          T s = g1[i];
          gg1[i] = d * (hp[i] - xv);
          if (k >= 1) {
            s += g0[i];
            gg0[i] = d * (hp[i - ks] - xv);
          } else {
            gg0[i] = T(0);
          }
          if (k + 1 < n) {
            s += g2[i];
            gg2[i] = d * (hp[i + ks] - xv);
          } else {
            gg2[i] = T(0);
          }
          const T v = d * (T(1) - s);
          if (ACC) gx[o + i] += v;
          else gx[o + i] = v;
        }
      }
    }
    std::swap(dcur, dnext);
  }
}

template <typename T, int GH, bool ACC>
void bwd_plane(const T* gh, T scale, const uint8_t* am, uint8_t dir, const T* x, const T* g,
               int64_t gps, const T* h, T* gx, T* gg, int64_t ggps, T* dcur, T* dnext, int64_t K,
               const Geom& G) {
  const bool vert = G.ks == 1;
#define SPN_BWD(KK, KSV) \
  bwd_plane_impl<T, KK, KSV, GH, ACC>(gh, scale, am, dir, x, g, gps, h, gx, gg, ggps, dcur, dnext, G)
  if (K == 1) {
    if (vert) SPN_BWD(1, 1);
    else SPN_BWD(1, 0);
  } else {
    if (vert) SPN_BWD(3, 1);
    else SPN_BWD(3, 0);
  }
#undef SPN_BWD
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
  const Geom G(H, W, direction);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate_fwd", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = gates.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / C, c = s % C;
        const scalar_t* g = gp + (b * K * Cg + (Cg == 1 ? 0 : c)) * HW;
        fwd_plane<scalar_t>(xp + s * HW, g, Cg * HW, hp + s * HW, K, G);
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
  at::Tensor gg = shared ? at::empty({B, K, C, H, W}, x.options())
                         : at::empty(gates.sizes(), x.options());
  const Geom G(H, W, direction);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate_bwd", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = gates.data_ptr<scalar_t>();
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* ghp = gh.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* ggp = gg.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(2 * std::max(H, W));
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / C, c = s % C;
        const scalar_t* g = gp + (b * K * Cg + (Cg == 1 ? 0 : c)) * HW;
        const int64_t ggc = shared ? C : Cg;
        scalar_t* ggs = ggp + (b * K * ggc + (ggc == 1 ? 0 : c)) * HW;
        bwd_plane<scalar_t, 0, false>(ghp + s * HW, scalar_t(1), nullptr, 0, xp + s * HW, g, Cg * HW,
                                      hp + s * HW, gxp + s * HW, ggs, ggc * HW, buf.data(),
                                      buf.data() + std::max(H, W), K, G);
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
      std::vector<scalar_t> scratch(save ? 0 : HW);
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / C, c = s % C;
        scalar_t* o = op + s * HW;
        for (int64_t d = 0; d < 4; ++d) {
          const Geom G(H, W, d);
          const scalar_t* g = gp + ((b * 4 + d) * K * Cg + (Cg == 1 ? 0 : c)) * HW;
          scalar_t* hd = save ? hsp + (d * B * C + s) * HW : (d == 0 ? o : scratch.data());
          fwd_plane<scalar_t>(xp + s * HW, g, Cg * HW, hd, K, G);
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
  const at::Tensor x = x_.contiguous();
  const at::Tensor gates = gates_.contiguous();
  const at::Tensor hs = hs_.contiguous();
  const at::Tensor go = grad_out_.contiguous().to(x.scalar_type());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = gates.size(2), Cg = gates.size(3), HW = H * W;
  at::Tensor gx = at::zeros_like(x, at::MemoryFormat::Contiguous);
  const bool shared = (Cg == 1 && C > 1);
  at::Tensor gg = shared ? at::empty({B, 4, K, C, H, W}, x.options())
                         : at::empty(gates.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate4_bwd", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = gates.data_ptr<scalar_t>();
    const scalar_t* hsp = hs.data_ptr<scalar_t>();
    const scalar_t* gop = go.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* ggp = gg.data_ptr<scalar_t>();
    const int64_t ggc = shared ? C : Cg;
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(2 * std::max(H, W));
      std::vector<uint8_t> am(merge == 0 ? HW : 0);
      for (int64_t s = begin; s < end; ++s) {
        const int64_t b = s / C, c = s % C;
        if (merge == 0) {  // first direction reaching the max, as torch.max(dim=0)
          const scalar_t* h0 = hsp + s * HW;
          for (int64_t i = 0; i < HW; ++i) {
            scalar_t best = h0[i];
            uint8_t a = 0;
            for (int64_t d = 1; d < 4; ++d) {
              const scalar_t v = hsp[(d * B * C + s) * HW + i];
              if (v > best) {
                best = v;
                a = static_cast<uint8_t>(d);
              }
            }
            am[i] = a;
          }
        }
        for (int64_t d = 0; d < 4; ++d) {
          const Geom G(H, W, d);
          const scalar_t* g = gp + ((b * 4 + d) * K * Cg + (Cg == 1 ? 0 : c)) * HW;
          scalar_t* ggs = ggp + ((b * 4 + d) * K * ggc + (ggc == 1 ? 0 : c)) * HW;
          const scalar_t* hd = hsp + (d * B * C + s) * HW;
          scalar_t* d0 = buf.data();
          scalar_t* d1 = buf.data() + std::max(H, W);
          if (merge == 0)
            bwd_plane<scalar_t, 1, true>(gop + s * HW, scalar_t(1), am.data(), static_cast<uint8_t>(d),
                                         xp + s * HW, g, Cg * HW, hd, gxp + s * HW, ggs, ggc * HW, d0, d1,
                                         K, G);
          else
            bwd_plane<scalar_t, 0, true>(gop + s * HW, merge == 1 ? scalar_t(0.25) : scalar_t(1), nullptr,
                                         0, xp + s * HW, g, Cg * HW, hd, gxp + s * HW, ggs, ggc * HW, d0,
                                         d1, K, G);
        }
      }
    });
  });
  if (shared) gg = gg.sum(3, /*keepdim=*/true);
  return {gx, gg};
}

int64_t num_threads() { return at::get_num_threads(); }

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
