"""GPU backend (Triton) without a GPU.

- The kernels against the reference: ``tests/test_triton_interp.py``, marked ``triton_interp``,
  in its own pytest process with ``SPN_BACKEND=triton TRITON_INTERPRET=1`` (``make test``'s
  second job; the interpreter must be on before triton imports).
- The Triton kernels are the CUDA kernels of the ``torch.ops.spn`` ops, next to the C++ CPU
  kernels, registered whether or not there is a GPU; torch.compile traces into them.
- The kernels compile for real GPUs: Triton's own compiler and ptxas lower them to CUDA binaries
  for sm_80 / sm_90 ahead of time (no device is needed to compile).
- The backend choice of ``spn.ops._backend`` (CUDA tensors, missing triton, ``SPN_BACKEND``),
  ``spn info``, and the GPU benchmark's dry run and refusal.

Where triton is not installed, the tests that need it are skipped with that reason.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

import spn.ops.triton as spn_triton
from spn.cli import main
from spn.ops import _backend, active_backend, extension_available, propagate
from spn.ops._codes import MERGE_CODES

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (make install pins triton==3.9.0)")
FAKE_CUDA = types.SimpleNamespace(device=torch.device("cuda", 0))  # use_triton reads only .device
OPS = ("propagate_fwd", "propagate_bwd", "propagate4_fwd", "propagate4_bwd")


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SPN_BACKEND", "TRITON_INTERPRET")}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- the kernels


def _ptxas_present() -> bool:
    if not HAS_TRITON:
        return False
    import triton

    return (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


def _variants(K):
    """Constexpr variants covering every branch of every kernel at least once."""
    M = MERGE_CODES  # the merge codes the kernels take
    fwd = [
        ("fp32", dict(K=3, G_SHARED=True, HAS_L=False, L_SHARED=False, NORM=1, CB=1, BLOCK=1024), 8),
        ("fp16", dict(K=3, G_SHARED=False, HAS_L=True, L_SHARED=True, NORM=2, CB=4, BLOCK=128), 4),
        ("bf16", dict(K=1, G_SHARED=False, HAS_L=True, L_SHARED=False, NORM=3, CB=2, BLOCK=256), 4),
        ("fp64", dict(K=3, G_SHARED=False, HAS_L=False, L_SHARED=False, NORM=0, CB=1, BLOCK=512), 4),
        ("fp32", dict(K=1, G_SHARED=True, HAS_L=False, L_SHARED=False, NORM=0, CB=8, BLOCK=64), 4),
    ]
    bwd = [
        ("fp32", dict(K=3, G_SHARED=True, HAS_L=False, L_SHARED=False, ATOMIC=True, NORM=1, MERGE=M["max"], CB=1,
                      BLOCK=1024), 8),
        ("fp16", dict(K=3, G_SHARED=False, HAS_L=True, L_SHARED=True, ATOMIC=False, NORM=2, MERGE=M["mean"], CB=4,
                      BLOCK=128), 4),
        ("bf16", dict(K=1, G_SHARED=False, HAS_L=True, L_SHARED=False, ATOMIC=False, NORM=3, MERGE=M["none"], CB=2,
                      BLOCK=256), 4),
        ("fp64", dict(K=3, G_SHARED=False, HAS_L=False, L_SHARED=False, ATOMIC=False, NORM=3, MERGE=M["none"], CB=1,
                      BLOCK=512), 4),
        ("fp32", dict(K=1, G_SHARED=True, HAS_L=True, L_SHARED=True, ATOMIC=True, NORM=0, MERGE=M["sum"], CB=8,
                      BLOCK=64), 4),
        ("fp32", dict(K=3, G_SHARED=True, HAS_L=True, L_SHARED=True, ATOMIC=False, NORM=3, MERGE=M["max"], CB=2,
                      BLOCK=256), 4),
        ("fp64", dict(K=3, G_SHARED=True, HAS_L=False, L_SHARED=False, ATOMIC=True, NORM=2, MERGE=M["sum"], CB=2,
                      BLOCK=128), 4),
    ]
    merge = [("fp32", dict(MERGE=M["max"], BLOCK=1024), 4), ("bf16", dict(MERGE=M["mean"], BLOCK=1024), 4),
             ("fp64", dict(MERGE=M["sum"], BLOCK=1024), 4)]
    return ([(K.scan_fwd_kernel, *v) for v in fwd] + [(K.scan_bwd_kernel, *v) for v in bwd]
            + [(K.merge_fwd_kernel, *v) for v in merge])


@needs_triton
@pytest.mark.skipif(not _ptxas_present(), reason="this triton wheel ships no ptxas")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs the compiler, not the interpreter")
def test_kernels_compile_for_cuda_without_a_gpu():
    """Triton's compiler and ptxas lower every kernel variant to a CUDA binary for sm_90 (H100)
    and, for a subset, sm_80 (A100); the interpreter alone would not catch compile errors."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    from spn.ops.triton import kernels

    acc_ptrs = ("hs_ptr", "gx_ptr", "gg_ptr", "gl_ptr", "scr_ptr")
    for i, (fn, dt, ce, warps) in enumerate(_variants(kernels)):
        acc = "fp64" if dt == "fp64" else "fp32"
        sig = {}
        for name in fn.arg_names:
            if name in ce:
                sig[name] = "constexpr"
            elif name == "idx_ptr":
                sig[name] = "*i8"
            elif name.endswith("_ptr"):
                sig[name] = "*" + (acc if name in acc_ptrs else dt)
            else:
                sig[name] = "i32"
        for arch in (90, 80) if i % 4 == 0 else (90,):
            compiled = triton.compile(ASTSource(fn, sig, ce), target=GPUTarget("cuda", arch, 32),
                                      options={"num_warps": warps, "num_stages": 1,
                                                                      "enable_fp_fusion": True})
            assert compiled.asm.get("cubin"), (fn.__name__, ce, arch)


@needs_triton
@pytest.mark.skipif(not extension_available(), reason="the CPU kernels (spn._C) are missing: a reference-only run")
def test_each_op_has_a_cpu_and_a_cuda_kernel_without_a_gpu():
    """One family of ops: the dispatcher holds the C++ kernel for CPU and the Triton kernel for
    CUDA on each op, registered as soon as triton imports, GPU or not."""
    code = (
        "import torch, spn.ops.triton as t\n"
        "assert t.load() is not None, t.error()\n"
        "from torch._library.triton import triton_ops_to_kernels as k\n"
        f"for name in {OPS!r}:\n"
        "    op = 'spn::' + name\n"
        "    has = torch._C._dispatch_has_kernel_for_dispatch_key\n"
        "    dump = torch._C._dispatch_dump(op)\n"
        "    cpu = [ln for ln in dump.splitlines() if ln.startswith('CPU:')]\n"
        "    print(name, has(op, 'CPU'), has(op, 'CUDA'), 'propagation.cpp' in cpu[0], len(k[op]) > 0)\n"
        "print('cuda available:', torch.cuda.is_available())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert lines[:4] == [f"{name} True True True True" for name in OPS], proc.stdout
    assert not torch.cuda.is_available() or lines[4] == "cuda available: True"


@needs_triton
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="checks the compiled-mode registration")
@pytest.mark.parametrize("merge", ["max", "none"])
def test_ops_trace_into_kernel_launches_on_fake_cuda_tensors(monkeypatch, merge):
    """What torch.compile does with the ops on CUDA tensors (AOTDispatcher functionalizes; the
    ops decompose into their Triton implementations, the kernels as wrap_triton nodes), on fake
    CUDA tensors, which need no GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._subclasses.functional_tensor import dispatch_functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

    ops = spn_triton.load()
    monkeypatch.setattr(ops, "_sm_count", lambda index: 132)  # an H100's multiprocessors
    m = MERGE_CODES[merge]

    def step(x, g, lam):
        out, hs = torch.ops.spn.propagate4_fwd(x, g, lam, m, 1, 2, True)
        grads = torch.ops.spn.propagate4_bwd(torch.ones_like(out), x, g, lam, hs if hs.numel() else out, m, 1, 2)
        return out, *grads

    with FakeTensorMode():
        x = torch.empty(2, 3, 5, 7, device="cuda", dtype=torch.float16)
        g = torch.empty(2, 4, 3, 1, 5, 7, device="cuda", dtype=torch.float16)
        lam = torch.empty(2, 4, 1, 5, 7, device="cuda", dtype=torch.float16)
        gm = make_fx(dispatch_functionalize(step), tracing_mode="fake")(x, g, lam)
        out, gx, gg, gl = gm(x, g, lam)
    launches = [n for n in gm.graph.nodes if "triton_kernel_wrapper" in str(n.target)]
    # scan (+ merge); adjoint sweep (+ the max merge's winners, recomputed from the saved maps)
    assert len(launches) == (2 if merge == "none" else 4), gm.graph
    assert not [n for n in gm.graph.nodes if "spn." in str(n.target)], gm.graph  # no opaque op left
    assert out.shape == ((2, 3, 5, 7) if merge == "max" else (2, 4, 3, 5, 7)) and out.dtype == torch.float16
    assert gx.shape == x.shape and gg.shape == g.shape and gl.shape == lam.shape and gg.dtype == torch.float16


@needs_triton
@pytest.mark.skipif(not extension_available(), reason="the CPU kernels (spn._C) are missing: a reference-only run")
def test_cpu_tensors_keep_the_op_opaque_under_functionalization():
    """The decomposition into Triton launches is for CUDA tensors only: CPU tensors keep the op."""
    from torch._subclasses.functional_tensor import dispatch_functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

    spn_triton.load()

    def step(x, g):
        return torch.ops.spn.propagate_fwd(x, g, None, 0, 1, 0)

    gm = make_fx(dispatch_functionalize(step), tracing_mode="fake")(torch.randn(1, 2, 3, 4), torch.rand(1, 3, 2, 3, 4))
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert targets == ["spn.propagate_fwd.default"], targets


@needs_triton
def test_sizes_beyond_the_kernels_limits_are_clear_errors():
    ops = spn_triton.load()
    with pytest.raises(ValueError, match=r"scan lines of 70000 pixels exceed .*\(SPN_BACKEND=reference\)"):
        ops._geometry(torch.empty(1, 1, 2, 70000, device="meta"), 2, 0)
    with pytest.raises(ValueError, match=r"70000 chunks exceed the Triton kernel's grid limit"):
        ops._geometry(torch.empty(1, 1, 70000, 2, device="meta"), 2, 1)
    with pytest.raises(ValueError, match=r"x spans \d+ elements per batch item.*32-bit offsets"):
        ops._check_offsets(x=torch.empty(1, 2**15 + 1, 2**8, 2**8, device="meta"))
    ops._check_offsets(x=torch.empty(4, 2**14, 2**8, 2**8, device="meta"))  # the batch axis is 64-bit


# --------------------------------------------------------------------------- backend choice


@pytest.fixture
def backend_state(monkeypatch):
    monkeypatch.delenv("SPN_BACKEND", raising=False)
    monkeypatch.setattr(_backend, "_triton_state", {"warned": False})
    monkeypatch.setattr(spn_triton, "_state", dict(spn_triton._state))
    return monkeypatch


def fake_triton(monkeypatch, interpreting=False):
    """Pretend the Triton ops loaded (without registering anything)."""
    mod = types.SimpleNamespace(INTERPRETING=interpreting)
    monkeypatch.setattr(spn_triton, "_state", {"module": mod, "error": None, "tried": True})
    return mod


def missing_triton(monkeypatch):
    monkeypatch.setattr(spn_triton, "_state", {"module": None, "error": "ImportError: no triton", "tried": True})
    monkeypatch.setattr(spn_triton, "_triton", lambda: (None, "ImportError: no triton"))


def test_cuda_tensors_choose_triton_when_it_imports(backend_state):
    mod = fake_triton(backend_state)
    assert _backend.use_triton(FAKE_CUDA) is True
    assert _backend.triton_ops() is mod
    assert _backend.use_triton(torch.zeros(1)) is False, "CPU tensors keep the C++ kernels by default"
    backend_state.setenv("SPN_BACKEND", "reference")
    assert _backend.use_triton(FAKE_CUDA) is False, "SPN_BACKEND=reference forces the reference everywhere"
    assert active_backend("cuda") == "reference (forced by SPN_BACKEND)"


def test_cuda_without_triton_warns_once_and_runs_the_reference(backend_state):
    missing_triton(backend_state)
    with pytest.warns(RuntimeWarning, match=r"triton could not be imported \(ImportError: no triton\)") as rec:
        assert _backend.use_triton(FAKE_CUDA) is False
    msg = str([w for w in rec if issubclass(w.category, RuntimeWarning)][0].message)
    assert "pip install triton" in msg and "reference" in msg and "float32" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _backend.use_triton(FAKE_CUDA) is False  # only once
    assert active_backend("cuda") == "reference (triton not importable)"


def test_forced_triton_without_triton_is_a_clear_error(backend_state):
    missing_triton(backend_state)
    backend_state.setenv("SPN_BACKEND", "triton")
    x, g = torch.rand(1, 1, 3, 3), torch.rand(1, 1, 1, 3, 3)
    with pytest.raises(RuntimeError, match=r"SPN_BACKEND=triton, but triton cannot be imported.*pip install triton"):
        propagate(x, g, 0)
    assert active_backend("cpu").startswith("error: SPN_BACKEND=triton but triton is not importable")


def test_forced_triton_on_cpu_needs_the_interpreter(backend_state):
    fake_triton(backend_state, interpreting=False)
    backend_state.setenv("SPN_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        propagate(torch.rand(1, 1, 3, 3), torch.rand(1, 1, 1, 3, 3), 0)
    assert active_backend("cpu") == "error: SPN_BACKEND=triton on CPU needs TRITON_INTERPRET=1"
    fake_triton(backend_state, interpreting=True)
    assert _backend.use_triton(torch.zeros(1)) is True
    assert "interpreter" in active_backend("cpu") and "forced by SPN_BACKEND" in active_backend("cpu")


def test_other_devices_keep_the_reference_under_forced_triton(backend_state):
    fake_triton(backend_state)
    backend_state.setenv("SPN_BACKEND", "triton")
    assert _backend.use_triton(torch.empty(1, device="meta")) is False


def test_importing_spn_does_not_import_triton():
    code = "import sys, spn, spn.ops, spn.nn; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- spn info


def test_info_shows_the_gpu_backend(backend_state, capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend_cuda"] == active_backend("cuda")
    if HAS_TRITON:
        import triton

        assert info["triton"] == triton.__version__ and info["backend_cuda"] == f"triton {triton.__version__}"
        assert info["triton_interpreter"] is False and info["triton_error"] is None
    missing_triton(backend_state)
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "reference (triton not importable)" in text and "ImportError: no triton" in text


# --------------------------------------------------------------------------- benchmark


@needs_triton
def test_bench_gpu_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--dry-run", "--json", str(out)],
                          env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and res["backend"].startswith("triton") and "interpreter" in res["backend"]
    want = [("C", "fwd"), ("C", "fwd_bwd"), ("1", "fwd"), ("1", "fwd_bwd")]
    assert [(r["Cg"], r["pass"]) for r in res["rows"]] == want
    for r in res["rows"]:
        assert r["kernel"]["median_ms"] > 0 and r["reference"]["median_ms"] > 0 and r["roofline_ms"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bench_gpu_refuses_without_cuda():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py")], env=clean_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "--dry-run" in proc.stderr
