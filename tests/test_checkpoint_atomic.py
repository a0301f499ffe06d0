"""A checkpoint is one atomic unit: interrupted at every point of its writing (an error raised, or
the process killed), the run keeps a complete checkpoint, resumes from the newest complete one,
and leaves no half-written file behind; the loader checks what it reads (the run's pointer, every
field of checkpoint.json, finite float weights) and refuses the early format 1.
"""
from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch

from spn.models.checkpoint import format as ckfmt
from spn.models.checkpoint import write as ckwrite
from spn.models import create_model
from spn.models.checkpoint import (list_checkpoints, load_checkpoint, load_training_state, open_checkpoint,
                                   save_checkpoint)

K = 3
TINY = dict(width=4, depth=1)


def _model_at(step: int):
    """A baseline whose weights encode ``step`` (every parameter = step), and an Adam with state."""
    torch.manual_seed(0)
    m = create_model("baseline", num_classes=K, **TINY)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # the optimizer now has state (moments, step counts) to save
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(float(step))
    return m, opt


def _save(run, step, keep=2):
    m, opt = _model_at(step)
    return save_checkpoint(run, m, {"step_marker": step}, step, optimizer=opt, keep=keep)


def _weight_step(model) -> float:
    return float(next(model.parameters()).detach().flatten()[0])


def _leftovers(run):
    d = run / "checkpoints"
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".")) if d.is_dir() else []


class _Ops:
    """Wraps the file operations of a checkpoint save; ``fail_at`` calls ``action`` at that operation."""

    NAMES = ("write_file_durably", "fsync_dir", "atomic_write_json", "_discard")

    def __init__(self, monkeypatch, fail_at=None, action=None):
        self.log = []
        self.fail_at, self.action = fail_at, action
        for name in self.NAMES:
            monkeypatch.setattr(ckwrite, name, self._wrap(name, getattr(ckwrite, name)))
        real_rename = os.rename
        monkeypatch.setattr(ckwrite.os, "rename", self._wrap("rename", real_rename))

    def _wrap(self, name, fn):
        def op(*args, **kw):
            k = len(self.log)
            self.log.append((name, os.path.basename(str(args[0]))))
            if k == self.fail_at:
                self.action()
            return fn(*args, **kw)
        return op


def _disk_full():
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def base(tmp_path):
    """A run with the complete checkpoints of steps 1 and 2."""
    run = tmp_path / "base"
    _save(run, 1)
    _save(run, 2)
    return run


def _ops_of_a_save(base, tmp_path, monkeypatch):
    run = tmp_path / "probe"
    shutil.copytree(base, run)
    with monkeypatch.context() as mp:
        ops = _Ops(mp)
        _save(run, 3)
    return ops.log


def test_the_save_writes_every_file_before_the_commit_and_the_pointer_after(base, tmp_path, monkeypatch):
    log = _ops_of_a_save(base, tmp_path, monkeypatch)
    names = [n for n, _ in log]
    commit = names.index("rename")
    files = [f for n, f in log[:commit] if n == "write_file_durably"]
    assert files == ["model.safetensors", "optimizer.safetensors", "optimizer.json", "checkpoint.json"]
    assert "fsync_dir" in names[commit - 1:commit] and names[commit + 1] == "fsync_dir"
    assert names[commit + 2:] == ["atomic_write_json", "_discard", "rename"]  # the pointer, then step 1 goes


@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_save_interrupted_at_every_point_keeps_a_complete_checkpoint(base, tmp_path, monkeypatch, mode):
    log = _ops_of_a_save(base, tmp_path, monkeypatch)
    commit = [n for n, _ in log].index("rename")
    for k in range(len(log)):
        run = tmp_path / f"{mode}-{k}"
        shutil.copytree(base, run)
        if mode == "raise":  # a full disk at operation k: an error, the previous checkpoint intact
            with monkeypatch.context() as mp:
                _Ops(mp, fail_at=k, action=_disk_full)
                with pytest.raises(OSError) as exc:
                    _save(run, 3)
            assert exc.value.errno == errno.ENOSPC
            if k <= commit:
                assert "the previous checkpoint is kept" in exc.value.spn_message
            assert _leftovers(run) == []  # nothing half-written is left
        else:  # kill -9 at operation k: the process vanishes mid-save (no cleanup runs)
            pid = os.fork()
            if pid == 0:
                try:
                    torch.set_num_threads(1)
                    with monkeypatch.context() as mp:
                        _Ops(mp, fail_at=k, action=lambda: os._exit(17))
                        _save(run, 3)
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 17, k
        ck = open_checkpoint(run, optimizer=True)  # the newest complete checkpoint
        want = 2 if k <= commit else 3  # an operation fails before it runs
        assert ck.step == want, (mode, k, log[k])
        model, info = load_checkpoint(run)
        assert _weight_step(model) == want and info["train_config"] == {"step_marker": want}
        fresh, opt = _model_at(0)
        load_training_state(run, fresh, opt)
        assert _weight_step(fresh) == want and opt.state_dict()["state"]
        # the next save works and removes what a killed writer left
        _save(run, 4)
        assert open_checkpoint(run).step == 4 and _leftovers(run) == []
        assert [s for s, _ in list_checkpoints(run)] == [want, 4]


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(base, caplog):
    (base / "checkpoints" / "step-00000002" / "model.safetensors").write_bytes(b"bit rot")
    with caplog.at_level("WARNING", logger="spn.models.checkpoint"):
        ck = open_checkpoint(base)
    assert ck.step == 1 and [p.name for p, _ in ck.skipped] == ["step-00000002"]
    assert "step-00000002" in caplog.text and "using step 1" in caplog.text
    (base / "checkpoints" / "step-00000001" / "checkpoint.json").write_text("{")
    with pytest.raises(ValueError, match="no usable checkpoint.*step-00000002.*step-00000001"):
        open_checkpoint(base)


def test_keep_and_the_pointer(tmp_path):
    run = tmp_path / "r"
    for s in (1, 2, 3):
        _save(run, s, keep=1)
    assert [s for s, _ in list_checkpoints(run)] == [3]
    pointer = json.loads((run / "checkpoint.json").read_text())
    assert pointer["step"] == 3 and pointer["checkpoint"] == "checkpoints/step-00000003"
    assert pointer["files"]["model"]["file"] == "checkpoints/step-00000003/model.safetensors"
    # the pointer's paths are relative to the run: an older reader (files relative to the run) finds them
    blob = (run / pointer["files"]["model"]["file"]).read_bytes()
    assert ckfmt.sha256(blob) == pointer["files"]["model"]["sha256"]
    # a step directory and the old file name of the weights both name a checkpoint
    assert load_checkpoint(run / "checkpoints" / "step-00000003")[1]["step"] == 3
    assert load_checkpoint(run / "model.safetensors")[1]["step"] == 3
    with pytest.raises(ValueError, match="keep"):
        _save(run, 4, keep=0)


def _write_format1(run, step):
    """A run directory as spn wrote it before step directories (format 1)."""
    m, opt = _model_at(step)
    run.mkdir(parents=True)
    weights = ckfmt.state_to_bytes(m.state_dict())
    tensors, meta = ckfmt.optimizer_split(opt)
    optim = ckfmt.state_to_bytes(tensors)
    (run / "model.safetensors").write_bytes(weights)
    (run / "optimizer.safetensors").write_bytes(optim)
    (run / "optimizer.json").write_text(json.dumps(meta))
    info = {"format": "spn-checkpoint", "version": 1, "model": "baseline", "model_config": m.config,
            "train_config": {"step_marker": step}, "step": step, "data": {"num_classes": K},
            "files": {"model": {"file": "model.safetensors", "sha256": ckfmt.sha256(weights)},
                      "optimizer": {"file": "optimizer.safetensors", "sha256": ckfmt.sha256(optim),
                                    "meta": "optimizer.json"}}}
    (run / "checkpoint.json").write_text(json.dumps(info))


def test_format_1_run_directories_are_refused_in_one_line(tmp_path):
    run = tmp_path / "old"
    _write_format1(run, 5)
    for path in (run, run / "model.safetensors"):
        with pytest.raises(ValueError, match=r"format version 1 \(an early development format, before step "
                                             r"directories\), which this spn does not read"):
            load_checkpoint(path)


def test_a_newer_format_is_a_clear_error(tmp_path):
    run = tmp_path / "new"
    _write_format1(run, 1)
    info = json.loads((run / "checkpoint.json").read_text())
    info["version"] = 99
    (run / "checkpoint.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="format version 99, written by a newer spn"):
        load_checkpoint(run)
