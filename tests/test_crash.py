"""A training run killed with SIGKILL at 20 random moments (a checkpoint every step) resumes
every time and ends bitwise equal to an uninterrupted run with the same seed.

The kills come from tests/crash_kill.py, which forks each training process from one warm
interpreter (no start-up per round) and draws the kill delays from a seeded generator; about 10 s
on this machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spn.models.checkpoint import list_checkpoints, load_checkpoint
from spn.training import read_log

TRAIN = ["--data", "synthetic", "--data-option", "num_images=4", "--data-option", "size=32",
         "--coarse", "gt-downsample:4", "--model", "spn_three_way", "--channels", "4", "--guidance-width", "4",
         "--guidance-depth", "2", "--patch-size", "16", "--batch-size", "2", "--steps", "60", "--no-val",
         "--no-progress", "--threads", "1", "--log-interval", "1", "--ckpt-interval", "1", "--seed", "0"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_twenty_sigkills_then_resume_equals_an_uninterrupted_run(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("crash_kill.py")), str(run), str(ref),
                           "0", "20", "--", *TRAIN], capture_output=True, text=True, timeout=240, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"crash test: {res['kills']} kills ({res['kills_during_save']} while a checkpoint was being written) "
          f"in {res['rounds']} rounds, steps after each kill "
          f"{res['steps_after_kill']}, reference {res['reference_s']:.1f} s, all {res['total_s']:.1f} s")
    assert res["errors"] == []
    assert res["kills"] == 20
    assert all(rc in (0, -9) for rc in res["exit_codes"]) and res["exit_codes"][-1] == 0
    steps = [s for s in res["steps_after_kill"] if s is not None]
    assert len(set(steps)) >= 5, steps  # the kills were spread over the run, not all at its start
    # the lock of every killed run was taken over by the next round
    logs = sorted((tmp_path / "crash-logs").glob("round-*.err"))[1:]
    assert any("took over the lock" in p.read_text() for p in logs)

    a, info_a = load_checkpoint(ref)
    b, info_b = load_checkpoint(run)
    assert info_a["step"] == info_b["step"] == 60
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    # the same losses, step for step, and a summary that covers the whole run
    assert [(r["step"], r["loss"]) for r in read_log(run)] == [(r["step"], r["loss"]) for r in read_log(ref)]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, run))
    assert (sa["final_loss"], sa["mean_loss"]) == (sb["final_loss"], sb["mean_loss"])
    assert sb["start_step"] > 0
    # nothing half-written is left: two complete checkpoints, no temporary directory, no lock
    assert [s for s, _ in list_checkpoints(run)] == [59, 60]
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []
    assert not (run / ".lock").exists()
