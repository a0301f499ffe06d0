"""Runs and commands under a hostile but realistic user: a second writer, a full disk, a
read-only or wrong output path, an unreadable checkpoint, and the smaller defects of the run-safety review
(refine overwriting its input, summaries after a resume, a silent empty val split, relative
--data paths, the bytes of --out x.bmp).

Operating-system errors are simulated where the test user (root) would not get them: a writer
that raises ENOSPC / EACCES (``spn.utils.io._write_all``, the seam every file write goes through).
"""
from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spn.utils.io as uio
from spn.cli import main
from spn.models.checkpoint import list_checkpoints, load_checkpoint, open_checkpoint
from spn.tasks import train
from spn.training import TrainConfig, read_log
from spn.utils.lock import DirLock, LockedError

from test_train import TINY_SPN, TinyShapes

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--data", "synthetic", "--data-option", "num_images=3", "--data-option", "size=32",
              "--coarse", "gt-downsample:4", "--model", "spn_one_way", "--channels", "4", "--guidance-width", "4",
              "--guidance-depth", "2", "--patch-size", "16", "--batch-size", "2", "--no-val", "--no-progress",
              "--threads", "1"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _one_error_line(err: str, cmd: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"spn {cmd}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _no_temp_files(d: Path) -> list:
    return [str(p) for p in d.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


# --- the lock ---------------------------------------------------------------------------------

_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)
lock.DirLock(sys.argv[2], what="a test holder").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _hold_lock(directory: Path) -> subprocess.Popen:
    """A process (not importing torch: it loads spn/utils/lock.py alone) that holds the lock."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(ROOT / "src/spn/utils/lock.py"), str(directory)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_dir_lock_names_the_holder_and_takes_over_a_dead_one(tmp_path):
    a = DirLock(tmp_path).acquire()
    with pytest.raises(LockedError) as exc:
        DirLock(tmp_path).acquire()  # a second writer in this process
    assert exc.value.pid == os.getpid()
    a.release()
    assert not (tmp_path / ".lock").exists()
    proc = _hold_lock(tmp_path)
    try:
        with pytest.raises(LockedError, match=rf"in use by a test holder \(PID {proc.pid}") as exc:
            DirLock(tmp_path).acquire()
        assert exc.value.pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / ".lock").exists()  # kill -9 left the file, but no process holds it now
    b = DirLock(tmp_path).acquire()
    assert b.took_over["pid"] == proc.pid
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    b.release()


def test_a_held_run_directory_refuses_a_second_writer(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    proc = _hold_lock(run)
    try:
        assert main(["train", *TINY_TRAIN, "--steps", "1", "--out", str(run)]) == 1
        line = _one_error_line(capsys.readouterr().err, "train")
        assert f"PID {proc.pid}" in line and str(run) in line
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert main(["train", *TINY_TRAIN, "--steps", "1", "--out", str(run)]) == 0  # the stale lock is taken over
    assert "took over the lock" in capsys.readouterr().err


@pytest.mark.timing  # the winner must still run when the resume is tried
def test_two_writers_started_together_and_a_resume_while_running(tmp_path, capsys):
    """The issue's case: two `spn train --out same` at once, then `--resume` while one runs."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "spn", "train", *TINY_TRAIN, "--steps", "400", "--ckpt-interval", "5",
           "--out", str(run)]
    procs = {seed: subprocess.Popen(cmd + ["--seed", str(seed)], env=_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for seed in (1, 2)}
    try:
        # wait for the winner: it holds the lock and has a checkpoint
        deadline = time.time() + 60
        while time.time() < deadline and not (list_checkpoints(run) and (run / ".lock").exists()):
            time.sleep(0.05)
        holder = json.loads((run / ".lock").read_text())["pid"]
        winner = next(s for s, p in procs.items() if p.pid == holder)
        loser = procs[3 - winner]
        _, err = loser.communicate(timeout=60)
        assert loser.returncode == 1
        line = _one_error_line(err, "train")
        assert f"PID {holder}" in line or "already holds a run" in line
        # --resume while the winner runs: refused, naming it
        assert main(["train", "--resume", "--out", str(run), "--steps", "400", "--no-progress"]) == 1
        assert f"PID {holder}" in _one_error_line(capsys.readouterr().err, "train")
        assert procs[winner].poll() is None, "the winner finished too early for this test"
        procs[winner].send_signal(signal.SIGKILL)
        procs[winner].wait()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    # one run's files only: the config and the checkpoint agree on the seed, one start in the log
    conf = json.loads((run / "config.json").read_text())
    assert conf["train_config"]["seed"] == winner
    assert open_checkpoint(run).info["train_config"]["seed"] == winner
    events = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    assert [e["event"] for e in events if "event" in e] == ["start"]
    # the killed run resumes (its stale lock is taken over)
    step = open_checkpoint(run).step
    assert main(["train", "--resume", "--out", str(run), "--steps", str(step + 2), "--no-progress"]) == 0
    assert load_checkpoint(run)[1]["step"] == step + 2


# --- operating-system errors: one line, exit 1, no partial file ------------------------------

def _fail_writes(monkeypatch, code, after_bytes=0, skip=0):
    """Every file write from the ``skip``-th on writes ``after_bytes`` bytes, then fails with ``code``."""
    calls = {"n": 0}
    real = uio._write_all

    def write(f, data):
        calls["n"] += 1
        if calls["n"] <= skip:
            return real(f, data)
        f.write(data[:after_bytes])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(uio, "_write_all", write)
    return calls


def test_out_paths_that_are_files_or_folders(tmp_path, capsys, tiny_run):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", *TINY_TRAIN, "--steps", "1", "--out", str(afile)]) == 1
    assert "--out" in _one_error_line(capsys.readouterr().err, "train") and afile.read_text() == "x"
    assert main(["train", *TINY_TRAIN, "--steps", "1", "--out", str(afile / "run")]) == 1
    assert "not a directory" in _one_error_line(capsys.readouterr().err, "train")
    # a --report that is a directory: refused before the evaluation runs
    assert main(["eval", "--checkpoint", str(tiny_run), "--data", "synthetic", "--report", str(tmp_path)]) == 1
    assert "--report" in _one_error_line(capsys.readouterr().err, "eval")
    for cmd in (["compare", "--data", "synthetic", "--peers", "bilinear"], ["demo", "--quick"]):
        assert main([*cmd, "--out", str(afile)]) == 1
        assert "not a folder" in _one_error_line(capsys.readouterr().err, cmd[0])


@pytest.fixture
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", *TINY_TRAIN, "--steps", "2", "--ckpt-interval", "1", "--out", str(run), "-q"]) == 0
    return run


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EACCES, "Permission denied")])
def test_eval_and_refine_writes_that_fail(tmp_path, capsys, monkeypatch, tiny_run, code, text):
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    np.save(tmp_path / "c.npy", np.full((6, 4, 4), 1 / 6, np.float32))
    out = tmp_path / "out"
    out.mkdir()
    _fail_writes(monkeypatch, code, after_bytes=10)
    rc = main(["eval", "--checkpoint", str(tiny_run), "--data", "synthetic", "--limit", "1",
               "--json", str(out / "m.json")])
    assert rc == 1
    line = _one_error_line(capsys.readouterr().err, "eval")
    assert f"cannot write {out / 'm.json'}: {text}" in line
    rc = main(["refine", "--checkpoint", str(tiny_run), "--image", str(img), "--coarse", str(tmp_path / "c.npy"),
               "--out", str(out / "r.png")])
    assert rc == 1
    assert f"cannot write {out / 'r.png'}: {text}" in _one_error_line(capsys.readouterr().err, "refine")
    assert list(out.iterdir()) == []  # no partial file, no temporary file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the injected EACCES covers it)")
def test_a_read_only_folder_for_real(tmp_path, capsys, tiny_run):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["eval", "--checkpoint", str(tiny_run), "--data", "synthetic", "--json", str(ro / "m.json")]) == 1
        assert "permission denied" in _one_error_line(capsys.readouterr().err, "eval").lower()
    finally:
        ro.chmod(0o755)


def test_a_disk_that_fills_during_training(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    # the run writes config.json, then a checkpoint of 4 files + the pointer every step: the disk
    # fills inside the checkpoint of step 3
    _fail_writes(monkeypatch, errno.ENOSPC, after_bytes=100, skip=1 + 5 + 5 + 2)
    assert main(["train", *TINY_TRAIN, "--steps", "5", "--ckpt-interval", "1", "--out", str(run)]) == 1
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "cannot save the checkpoint of step 3" in line and "No space left on device" in line
    assert "previous checkpoint is kept" in line
    monkeypatch.undo()  # space freed
    assert open_checkpoint(run, optimizer=True).step == 2 and _no_temp_files(run) == []
    assert not (run / ".lock").exists()
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert load_checkpoint(run)[1]["step"] == 5


def test_an_unreadable_checkpoint(tmp_path, capsys, monkeypatch, tiny_run):
    weights = open_checkpoint(tiny_run).directory / "model.safetensors"
    real = Path.read_bytes

    def read_bytes(self):
        if self == weights:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    img = tmp_path / "i.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    assert main(["refine", "--checkpoint", str(tiny_run), "--image", str(img), "--out", str(tmp_path / "o.png")]) == 1
    assert f"Permission denied: {weights}" in _one_error_line(capsys.readouterr().err, "refine")
    assert main(["eval", "--checkpoint", str(tiny_run), "--data", "synthetic"]) == 1
    assert "Permission denied" in _one_error_line(capsys.readouterr().err, "eval")


# --- the smaller defects ----------------------------------------------------------------------

def test_refine_never_overwrites_its_input(tmp_path, capsys, tiny_run):
    img = tmp_path / "photo.png"
    Image.fromarray((np.arange(32 * 32 * 3) % 251).astype(np.uint8).reshape(32, 32, 3)).save(img)
    np.save(tmp_path / "photo.npy", np.full((6, 4, 4), 1 / 6, np.float32))
    before = img.read_bytes()
    for extra in ([], ["--overlay", str(tmp_path / "ov.png")]):
        assert main(["refine", "--checkpoint", str(tiny_run), "--image", str(img), "--coarse",
                     str(tmp_path / "photo.npy"), "--out", str(img), *extra]) == 1
        assert "refusing to overwrite" in _one_error_line(capsys.readouterr().err, "refine")
    assert main(["refine", "--checkpoint", str(tiny_run), "--image", str(img), "--coarse",
                 str(tmp_path / "photo.npy"), "--out", str(tmp_path / "r.png"), "--overlay", str(img)]) == 1
    capsys.readouterr()
    # a folder refined into itself: NAME.png would replace the image NAME.png
    assert main(["refine", "--checkpoint", str(tiny_run), "--image", str(tmp_path), "--coarse", str(tmp_path),
                 "--out", str(tmp_path)]) == 1
    assert "refusing to overwrite" in _one_error_line(capsys.readouterr().err, "refine")
    assert img.read_bytes() == before


def test_out_suffix_decides_the_format(tmp_path, capsys, tiny_run):
    img = tmp_path / "i.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    np.save(tmp_path / "c.npy", np.full((6, 4, 4), 1 / 6, np.float32))
    args = ["refine", "--checkpoint", str(tiny_run), "--image", str(img), "--coarse", str(tmp_path / "c.npy")]
    assert main([*args, "--out", str(tmp_path / "x.bmp"), "--overlay", str(tmp_path / "o.tif")]) == 0
    assert (tmp_path / "x.bmp").read_bytes()[:2] == b"BM"
    with Image.open(tmp_path / "x.bmp") as im:
        assert im.format == "BMP" and im.mode == "P" and im.size == (32, 32)
    with Image.open(tmp_path / "o.tif") as im:
        assert im.format == "TIFF"
    capsys.readouterr()
    for bad in ("x.jpg", "x.xyz"):
        assert main([*args, "--out", str(tmp_path / bad)]) == 1
        assert "unsupported file type" in _one_error_line(capsys.readouterr().err, "refine")
        assert not (tmp_path / bad).exists()


def _cut_at(step):
    class Killed(Exception):
        pass

    def kill(s, loss, model):
        if s == step:
            raise Killed
    return kill, Killed


def test_the_summary_after_a_resume_covers_the_whole_run(tmp_path):
    ds = TinyShapes()
    base = dict(model="spn_three_way", model_cfg=dict(TINY_SPN), patch_size=24, batch_size=2, steps=14, lr=3e-3,
                log_interval=1, ckpt_interval=1, progress=False, val_split=None, threads=1, seed=0)
    full = train(TrainConfig(out=str(tmp_path / "full"), **base), train_dataset=ds)
    kill, Killed = _cut_at(12)
    cut = TrainConfig(out=str(tmp_path / "cut"), **base)
    t0 = time.perf_counter()
    with pytest.raises(Killed):
        train(cut, train_dataset=ds, callback=kill)
    first_segment = time.perf_counter() - t0
    before = open_checkpoint(tmp_path / "cut").info["elapsed_s"]  # training time up to step 12
    assert 0 < before < first_segment
    resumed = train(cut.replace(resume=True), train_dataset=ds)
    # the time and the rate cover the whole run: both segments, all 14 steps of 2 patches
    assert resumed["elapsed_s"] == pytest.approx(before + resumed["segment_elapsed_s"])
    assert resumed["images_per_s"] == pytest.approx(14 * 2 / resumed["elapsed_s"])
    assert resumed["start_step"] == 12 and len(resumed["losses"]) == 2
    assert resumed["mean_loss"] == pytest.approx(sum(full["losses"][-10:]) / 10, rel=0, abs=0)
    assert resumed["final_loss"] == full["final_loss"]
    stored = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert stored["mean_loss"] == full["mean_loss"] and stored["resumed_from"].endswith("step-00000012")


def _folder(root: Path, n: int, size=(24, 24)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(root / "images" / f"a{i}.png")
        m = np.zeros(size, np.uint8)
        m[: size[0] // 2] = 1
        Image.fromarray(m, mode="L").save(root / "masks" / f"a{i}.png")


def test_an_empty_val_split_is_a_loud_warning(tmp_path, capsys):
    _folder(tmp_path / "data", 3)  # every 5th image goes to val: none here
    out = tmp_path / "run"
    assert main(["train", "--data", f"folder:{tmp_path / 'data'}", "--model", "baseline", "--baseline-width", "4",
                 "--baseline-depth", "1", "--patch-size", "16", "--batch-size", "2", "--steps", "1",
                 "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "spn train: warning: no final evaluation: the validation split 'val'" in err and "is empty" in err
    assert "is empty" in json.loads((out / "summary.json").read_text())["val_note"]


def test_resume_from_another_directory(tmp_path, monkeypatch, capsys):
    _folder(tmp_path / "proj" / "data", 4)
    monkeypatch.chdir(tmp_path / "proj")
    args = ["--model", "baseline", "--baseline-width", "4", "--baseline-depth", "1", "--patch-size", "16",
            "--batch-size", "2", "--no-progress", "--threads", "1", "--no-val"]
    assert main(["train", "--data", "folder:data", *args, "--steps", "1", "--out", "runs/b"]) == 0
    stored = json.loads((tmp_path / "proj" / "runs" / "b" / "config.json").read_text())["train_config"]
    assert stored["data"] == f"folder:{tmp_path / 'proj' / 'data'}"
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", "--out", "proj/runs/b", "--steps", "2", "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "proj" / "runs" / "b")[1]["step"] == 2
    assert [r["step"] for r in read_log(tmp_path / "proj" / "runs" / "b")] == [1, 2]
