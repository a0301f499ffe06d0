"""Data-parallel training under torchrun (2 CPU processes, gloo) equals one process with the
same global batch; only rank 0 writes."""
import json
import os
import subprocess
import sys

import pytest
import torch

from spn.models import checkpoint as ckpt
from spn.training.distributed import DistContext, all_reduce_sum, env_world_size, init_distributed, wrap_model
from spn.training import read_log

COMMON = ["--data", "synthetic", "--data-option", "num_images=4", "--data-option", "size=48",
          "--coarse", "gt-downsample:8", "--model", "spn_three_way", "--channels", "4",
          "--guidance-width", "4", "--guidance-depth", "2", "--patch-size", "32", "--steps", "3", "--optimizer", "sgd", "--lr", "0.05",
          "--seed", "3", "--no-val", "--no-progress", "--log-interval", "1", "--ckpt-interval", "2",
          "--cache"]


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def test_single_process_context_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, ctx) is model
    t = torch.ones(2)
    assert torch.equal(all_reduce_sum(t, ctx), torch.ones(2))
    assert env_world_size() == 1


def test_bad_distributed_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed("cpu")
    assert DistContext(rank=1, world_size=2).is_main is False


def test_torchrun_two_processes_equals_one_process_with_the_global_batch(tmp_path):
    ddp_out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "spn", "train", *COMMON, "--batch-size", "2", "--out", str(ddp_out), "--threads", "1"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("trained spn_three_way") == 1  # only rank 0 reports

    single_out = tmp_path / "single"
    from spn.cli import main

    assert main(["train", *COMMON, "--batch-size", "4", "--out", str(single_out), "--threads", "1"]) == 0

    conf = json.loads((ddp_out / "config.json").read_text())
    assert conf["world_size"] == 2 and conf["global_batch_size"] == 4
    info = json.loads((ddp_out / "checkpoint.json").read_text())
    assert info["step"] == 3 and info["world_size"] == 2
    assert not (ddp_out / ".lock").exists()  # rank 0 held the run's lock and released it
    # rank 0 alone wrote the log: one line per step
    assert [r["step"] for r in read_log(ddp_out)] == [1, 2, 3]

    a = [r["loss"] for r in read_log(ddp_out)]
    b = [r["loss"] for r in read_log(single_out)]
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    m_ddp, _ = ckpt.load_checkpoint(ddp_out)
    m_one, _ = ckpt.load_checkpoint(single_out)
    for (k, va), vb in zip(m_ddp.state_dict().items(), m_one.state_dict().values()):
        assert torch.allclose(va, vb, rtol=1e-4, atol=1e-6), k
    # and the weights did move from the seeded initialisation
    torch.manual_seed(3)
    start = ckpt.build_model_from_info(info)
    moved = any(not torch.allclose(p, q) for p, q in zip(start.state_dict().values(), m_ddp.state_dict().values()))
    assert moved
