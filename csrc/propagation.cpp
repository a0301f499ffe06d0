// CPU kernels of the spatial propagation operator, version 2 of the contract
// (docs/spec/propagation.md; Liu et al., NIPS 2017, Eq. 1, 9, 10; GSPN's general form).
//
// For every scan line after the first of its chunk, at lateral index k with the valid
// neighbours j of the previous line and g the gates normalised on the fly from the raw gates r:
//     h[k] = (1 - sum_j g_j[k]) x[k] + sum_j g_j[k] h_prev[j]         (no input weight)
//     h[k] = l[k] x[k]            + sum_j g_j[k] h_prev[j]            (input weight l)
// The first line of a chunk is x (l x). Gates are read at the destination pixel; an invalid
// neighbour's gate is dropped from every sum (never multiplied by zero), and gates that are
// never used are never read, so a NaN there has no effect, as in the reference.
//
// Ops (namespace "spn"): their schemas, fake impls and autograd formulas are defined once, in
// Python (spn/ops/_custom.py); this file registers their CPU kernels (the Triton kernels in
// spn/ops/triton/ are the CUDA kernels of the same ops). normalize: 0 none, 1 clip, 2 always,
// 3 gspn. chunk: 0 = one chunk. The codes are spn/ops/_codes.py's; kernel_codes() reports this
// file's, and a test compares the two.
//   propagate_fwd(x, gates, input_weight?, direction, normalize, chunk)            -> h
//   propagate_bwd(grad_h, x, gates, input_weight?, h, direction, normalize, chunk) -> (gx, ggates, gl)
//   propagate4_fwd(x, gates4, input_weight4?, merge, normalize, chunk, save)       -> (out, hs)
//     hs: the four directional maps (B, 4, C, H, W) when save and merge is not none, else empty
//   propagate4_bwd(grad_out, x, gates4, input_weight4?, hs, merge, normalize, chunk) -> (gx, ggates, gl)
// direction: 0 left_to_right, 1 right_to_left, 2 top_to_bottom, 3 bottom_to_top.
// merge: 0 max (NaN-propagating; the gradient goes to the first direction attaining the max, a
// NaN counting as the max), 1 mean, 2 sum, 3 none (out is (B, 4, C, H, W) and is the backward's hs).
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
#include <cstdlib>
#include <string>
#include <memory>
#include <type_traits>
#include <utility>

namespace spn {
namespace {

// the codes of spn/ops/_codes.py (reported by kernel_codes(), compared by a test)
enum Dir : int { D_LEFT_TO_RIGHT = 0, D_RIGHT_TO_LEFT = 1, D_TOP_TO_BOTTOM = 2, D_BOTTOM_TO_TOP = 3 };
enum Merge : int { M_MAX = 0, M_MEAN = 1, M_SUM = 2, M_NONE = 3 };
enum Norm : int { N_NONE = 0, N_CLIP = 1, N_ALWAYS = 2, N_GSPN = 3 };
constexpr double kAlwaysEps = 1e-6;  // spn.ops.normalize.ALWAYS_EPS
constexpr double kGspnEps = 1e-7;    // spn.ops.normalize.GSPN_EPS

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

// ---------------------------------------------------------------------------------------------
// problem setup shared by the ops

struct Problem {
  int64_t B, C, H, W, HW, ND, K, Cg, Cl;
  int dirs[4];
  int norm;
  int64_t chunk;
  bool hasl;
  bool horizontal(int d) const { return dirs[d] == D_LEFT_TO_RIGHT || dirs[d] == D_RIGHT_TO_LEFT; }
  // shared gates with a normalisation: normalised once per batch item, chain rule after the reduction
  bool prenorm() const { return norm != N_NONE && Cg == 1 && C > 1; }
  bool any_horizontal() const {
    for (int d = 0; d < ND; ++d)
      if (horizontal(d)) return true;
    return false;
  }
  Geo geo(int d) const {
    const int dir = dirs[d];
    const bool rev = dir == D_RIGHT_TO_LEFT || dir == D_BOTTOM_TO_TOP;
    return horizontal(d) ? Geo{W, H, rev, chunk} : Geo{H, W, rev, chunk};
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

// Number of partial sums a gradient shared over channels is reduced into (fixed, so that the
// result does not depend on the thread count).
inline int64_t reduce_groups(int64_t C) { return std::min<int64_t>(C, 4); }

}  // namespace
}  // namespace spn

namespace spn {
namespace kbase {
#include "kernels.inc"
}  // namespace kbase
}  // namespace spn

#if defined(__x86_64__) && defined(__GNUC__)
#define SPN_HAVE_AVX2_VARIANT 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define SPN_KERNEL_AVX2 1
namespace spn {
namespace kavx2 {
#include "kernels.inc"
}  // namespace kavx2
}  // namespace spn
#undef SPN_KERNEL_AVX2
#pragma GCC pop_options
#endif

namespace spn {
namespace {

// The instruction set the kernels run with: "avx2" where the CPU has AVX2 and FMA (unless
// SPN_NO_AVX2 is set), else "sse2".
const char* kernel_isa_name() {
#ifdef SPN_HAVE_AVX2_VARIANT
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           std::getenv("SPN_NO_AVX2") == nullptr;
  return avx2 ? "avx2" : "sse2";
#else
  return "baseline";
#endif
}

bool use_avx2() {
#ifdef SPN_HAVE_AVX2_VARIANT
  static const bool v = std::string(kernel_isa_name()) == "avx2";
  return v;
#else
  return false;
#endif
}

#ifdef SPN_HAVE_AVX2_VARIANT
#define SPN_KERNEL(fn) (use_avx2() ? kavx2::fn : kbase::fn)
#else
#define SPN_KERNEL(fn) (kbase::fn)
#endif

std::string kernel_isa() { return kernel_isa_name(); }

// The integer codes the kernels take, as "kind:name=code,...;kind:...", for the test that compares
// them with spn/ops/_codes.py.
std::string kernel_codes() {
  return "direction:left_to_right=" + std::to_string(D_LEFT_TO_RIGHT) + ",right_to_left=" +
         std::to_string(D_RIGHT_TO_LEFT) + ",top_to_bottom=" + std::to_string(D_TOP_TO_BOTTOM) +
         ",bottom_to_top=" + std::to_string(D_BOTTOM_TO_TOP) + ";merge:max=" + std::to_string(M_MAX) +
         ",mean=" + std::to_string(M_MEAN) + ",sum=" + std::to_string(M_SUM) + ",none=" + std::to_string(M_NONE) +
         ";normalize:none=" + std::to_string(N_NONE) + ",clip=" + std::to_string(N_CLIP) +
         ",always=" + std::to_string(N_ALWAYS) + ",gspn=" + std::to_string(N_GSPN);
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
  TORCH_CHECK(normalize >= N_NONE && normalize <= N_GSPN, "spn: normalize must be 0 (none), 1 (clip), 2 (always) or 3 (gspn), got ",
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
    SPN_KERNEL(run_chain<scalar_t>)(P, Gsum.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(),
                                    g.gg.data_ptr<scalar_t>());
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
    SPN_KERNEL(run_fwd<scalar_t>)(P, x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(l), nullptr, M_NONE,
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
    SPN_KERNEL(run_bwd<scalar_t>)(P, gh.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(),
                      ptr_or_null<scalar_t>(l), h.data_ptr<scalar_t>(), true, M_NONE, gx.data_ptr<scalar_t>(),
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
  TORCH_CHECK(merge >= M_MAX && merge <= M_NONE, "spn: merge must be 0 (max), 1 (mean), 2 (sum) or 3 (none)");
  check_modes(normalize, chunk);
  const int64_t Cl = check_l(x_, l_, 4);
  const at::Tensor x = x_.contiguous(), gates = gates_.contiguous();
  const at::Tensor l = Cl ? l_->contiguous() : at::Tensor();
  const Problem P = make_problem(x, gates, 4, Cl, 0, normalize, chunk);
  const bool none = merge == M_NONE;
  at::Tensor out = none ? at::empty({P.B, 4, P.C, P.H, P.W}, x.options()) : at::empty_like(x, at::MemoryFormat::Contiguous);
  // hs: the directional maps (B, 4, C, H, W), saved for the backward; with merge "none" the output
  // is those maps (the autograd formula saves it)
  at::Tensor hs = (save && !none) ? at::empty({P.B, 4, P.C, P.H, P.W}, x.options()) : at::empty({0}, x.options());
  if (x.numel() == 0) return {out, hs};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spn_propagate4_fwd", [&] {
    scalar_t* hsp = none ? out.data_ptr<scalar_t>() : ptr_or_null<scalar_t>(hs);
    SPN_KERNEL(run_fwd<scalar_t>)(P, x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(l),
                      none ? nullptr : out.data_ptr<scalar_t>(), int(merge), hsp, true);
  });
  return {out, hs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> propagate4_bwd(const at::Tensor& grad_out_, const at::Tensor& x_,
                                                              const at::Tensor& gates_,
                                                              const std::optional<at::Tensor>& l_,
                                                              const at::Tensor& hs_, int64_t merge, int64_t normalize,
                                                              int64_t chunk) {
  check_common(x_, gates_, 6);
  TORCH_CHECK(merge >= M_MAX && merge <= M_NONE, "spn: merge must be 0 (max), 1 (mean), 2 (sum) or 3 (none)");
  check_modes(normalize, chunk);
  const int64_t Cl = check_l(x_, l_, 4);
  const bool none = merge == M_NONE;
  const auto xs = x_.sizes();
  TORCH_CHECK(hs_.dim() == 5 && hs_.size(0) == xs[0] && hs_.size(1) == 4 && hs_.size(2) == xs[1] &&
                  hs_.size(3) == xs[2] && hs_.size(4) == xs[3],
              "spn: hs must be the directional maps (B, 4, C, H, W): the forward's output with merge none, "
              "else its second output (run it with save=True)");
  if (none) {
    TORCH_CHECK(grad_out_.sizes() == hs_.sizes(), "spn: grad_out ", grad_out_.sizes(), " must be (B, 4, C, H, W)");
  } else {
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
    SPN_KERNEL(run_bwd<scalar_t>)(P, go.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(),
                      ptr_or_null<scalar_t>(l), hs.data_ptr<scalar_t>(), true, int(merge), gx.data_ptr<scalar_t>(),
                      G.gg.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(G.gl), ptr_or_null<scalar_t>(G.ggpart),
                      ptr_or_null<scalar_t>(G.glpart));
  });
  finish_grad_bufs(G, P, gates);
  return {gx, G.gg, G.gl};
}

}  // namespace

// The schemas of the propagation ops are defined in Python (spn/ops/_custom.py), once for every
// device; a kernel may be registered before its schema.
TORCH_LIBRARY_FRAGMENT(spn, m) {
  m.def("kernel_isa() -> str", &kernel_isa);
  m.def("kernel_codes() -> str", &kernel_codes);
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
