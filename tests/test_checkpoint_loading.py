"""What the checkpoint loader checks (tried as a hostile user would): the run's pointer against
the step directories, every field of checkpoint.json, finite float weights; and what a killed or
failing writer leaves (stale temporary files, the message of a full disk at the first save)."""
from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch

from spn.models import create_model
from spn.models.checkpoint import (clean_stale_temporaries, load_checkpoint, load_training_state, open_checkpoint,
                                   save_checkpoint)
from spn.models.checkpoint import format as ckfmt
from spn.models.checkpoint import write as ckwrite


def _model(fill=None):
    torch.manual_seed(0)
    m = create_model("baseline", num_classes=3, width=4, depth=1)
    if fill is not None:
        with torch.no_grad():
            for p in m.parameters():
                p.fill_(fill)
    return m


def _run(tmp_path, steps=(1, 2), name="run"):
    run = tmp_path / name
    for s in steps:
        save_checkpoint(run, _model(float(s)), {}, s, optimizer=torch.optim.SGD(_model().parameters(), lr=0.1))
    return run


def _edit_info(step_dir, **fields):
    f = step_dir / "checkpoint.json"
    info = json.loads(f.read_text())
    for key, value in fields.items():
        node, *path = key.split(".")
        target = info
        for part in [node] + path[:-1]:
            target = target[part] if path else target
        target[path[-1] if path else node] = value
    f.write_text(json.dumps(info))


def test_a_missing_newest_step_is_an_error_naming_both_steps(tmp_path):
    run = _run(tmp_path)
    shutil.rmtree(run / "checkpoints" / "step-00000002")
    with pytest.raises(FileNotFoundError, match=r"names the checkpoint of step 2 \(checkpoints/step-00000002\), "
                                                r"which is missing; the newest checkpoint present is step 1"):
        load_checkpoint(run)
    # the older one is used when asked for by its directory
    assert load_checkpoint(run / "checkpoints" / "step-00000001")[1]["step"] == 1
    # a pointer that lags behind the newest step (a kill between the commit and the pointer) is fine
    run2 = _run(tmp_path, name="lag")
    pointer = json.loads((run2 / "checkpoint.json").read_text())
    pointer.update(step=1, checkpoint="checkpoints/step-00000001")
    (run2 / "checkpoint.json").write_text(json.dumps(pointer))
    assert open_checkpoint(run2).step == 2


def test_a_pointer_without_step_directories_is_an_error(tmp_path):
    run = _run(tmp_path, steps=(3,))
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(FileNotFoundError, match=r"names the checkpoint of step 3 .* holds no committed step directory"):
        load_checkpoint(run)


@pytest.mark.parametrize("fill, match", [
    (float("nan"), r"the weight 'unet\.stem\.body\.0\.weight' holds 108 NaN or infinite value\(s\) of 108"),
    (float("inf"), r"holds 108 NaN or infinite"),
])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, fill, match):
    run = tmp_path / "r"
    save_checkpoint(run, _model(fill), {}, 1)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(run)
    with pytest.raises(ValueError, match=match):
        load_training_state(run, _model())


def test_integer_weights_are_refused_naming_the_tensor(tmp_path):
    run = tmp_path / "r"
    save_checkpoint(run, _model(), {}, 1)
    step = run / "checkpoints" / "step-00000001"
    state = {k: (v.to(torch.int32) if v.is_floating_point() else v) for k, v in _model().state_dict().items()}
    blob = ckfmt.state_to_bytes(state)
    (step / "model.safetensors").write_bytes(blob)
    _edit_info(step, **{"files.model.sha256": ckfmt.sha256(blob)})
    with pytest.raises(ValueError, match=r"the weight 'unet\.stem\.body\.0\.weight' is int32, not floating point"):
        load_checkpoint(run)


@pytest.mark.parametrize("field, value, match", [
    ("step", "12a", r"field 'step' must be an integer >= 0, got '12a'"),
    ("step", 7, r"field 'step' is 7 but the directory is step-00000001"),
    ("files.model.file", 3, r"field 'files\.model\.file' must be a relative file name, got 3"),
    ("files.model.file", "../../x", r"field 'files\.model\.file' must be a relative file name"),
    ("files.model.sha256", "abc", r"field 'files\.model\.sha256' must be 64 hex digits"),
    ("model", 5, r"field 'model' must be a model name"),
    ("model_config", [1], r"field 'model_config' must be an object"),
    ("data.num_classes", "three", r"field 'data\.num_classes' must be an integer >= 1, got 'three'"),
    ("data.class_names", ["a"], r"field 'data\.class_names' has 1 names but 'data\.num_classes' is 3"),
    ("version", "2", r"field 'version' must be an integer"),
    ("recent_losses", ["x"], r"field 'recent_losses' must be a list of numbers"),
])
def test_hand_edited_fields_are_named_in_the_error(tmp_path, field, value, match):
    run = _run(tmp_path, steps=(1,))
    _edit_info(run / "checkpoints" / "step-00000001", **{field: value})
    with pytest.raises(ValueError, match=match) as e:
        load_checkpoint(run / "checkpoints" / "step-00000001")
    assert "checkpoint.json" in str(e.value)
    with pytest.raises(ValueError, match="no usable checkpoint.*" + match.split(" must")[0]):
        load_checkpoint(run)


def test_a_hand_edited_pointer_is_named_too(tmp_path):
    run = _run(tmp_path)
    _edit_info(run, step="2b")
    with pytest.raises(ValueError, match=r"invalid checkpoint .*run/checkpoint\.json: field 'step'"):
        load_checkpoint(run)


def test_stale_temporary_files_are_removed_on_resume_only(tmp_path):
    run = _run(tmp_path)
    stale = run / ".checkpoint.json.k9abc.tmp"
    stale.write_text('{"format": ')
    other = run / "notes.tmp"
    other.write_text("mine")
    open_checkpoint(run)  # refine, eval: read-only
    assert stale.exists()
    assert open_checkpoint(run, optimizer=True).step == 2  # the resume of a training run
    assert not stale.exists() and other.exists()
    stale.write_text("{")
    assert clean_stale_temporaries(run) == [stale] and not stale.exists()


def test_a_full_disk_at_the_first_checkpoint_says_none_was_written(tmp_path, monkeypatch):
    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckwrite, "write_file_durably", full)
    with pytest.raises(OSError) as e:
        save_checkpoint(tmp_path / "r", _model(), {}, 1)
    assert "no checkpoint of this run had been written yet" in e.value.spn_message
    assert "previous checkpoint" not in e.value.spn_message
    monkeypatch.undo()
    run = _run(tmp_path, steps=(4,), name="r2")
    monkeypatch.setattr(ckwrite, "write_file_durably", full)
    with pytest.raises(OSError) as e:
        save_checkpoint(run, _model(), {}, 5)
    assert "the previous checkpoint is kept: step 4" in e.value.spn_message
