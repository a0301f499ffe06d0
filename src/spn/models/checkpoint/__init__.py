"""Checkpoints: safetensors weights + JSON, optimizer state as safetensors + JSON (no pickle),
each checkpoint one atomic unit.

A run directory holds::

    checkpoints/step-00000012/      one complete checkpoint per directory, named by its step
        model.safetensors           the model's state_dict
        optimizer.safetensors       the optimizer's tensors (``state.<param id>.<name>``), optional
        optimizer.json              the rest of the optimizer state (param groups, scalars), optional
        checkpoint.json             model name and config, train config, step, data info, file digests
    checkpoint.json                 a pointer: the newest checkpoint's JSON, file paths relative to the run

Writing (:func:`save_checkpoint`, :mod:`.write`): the whole set goes into a temporary directory
``checkpoints/.tmp-step-...``; every file and the directory are fsync'd; the directory is then
renamed to ``step-NNNNNNNN`` (the commit: a step directory is complete or absent), the
``checkpoints`` folder is fsync'd, and only then is the pointer replaced (atomically) and are the
older checkpoints beyond the newest ``keep`` removed. A kill, a full disk or any error at any
point leaves the previous complete checkpoint as it was; leftover temporary directories of dead
writers are removed by the next save, and the pointer's leftover temporary files by the next
resume (:func:`clean_stale_temporaries`).

Reading (:func:`open_checkpoint`, :mod:`.read`): the newest committed step directory whose files
are all present and match their SHA-256 digests, and whose ``checkpoint.json`` fields are valid
(each one named when it is not, :func:`validate_info`). A damaged newer one is skipped with a
warning that names it and the one used instead; a newest one that the run's pointer names but
that is missing is an error naming both steps. Loading (:func:`load_checkpoint`,
:func:`load_training_state`, :mod:`.load`) checks that every weight is a finite float where the
model has one, and names the tensor when it is not. Only format version 2 (step directories) is
read.

The format belongs to the models layer because everything above reads it: training writes and
resumes it, the ``baseline:RUN`` coarse source of :mod:`spn.data` and every command load it.

Example:
    >>> import tempfile
    >>> from spn.models import create_model
    >>> from spn.models.checkpoint import checkpoint_classes, list_checkpoints, load_checkpoint, save_checkpoint
    >>> run = tempfile.mkdtemp()
    >>> _ = save_checkpoint(run, create_model("baseline", num_classes=3, width=4, depth=1), cfg={}, step=0)
    >>> model, info = load_checkpoint(run)
    >>> model.name, info["step"], checkpoint_classes(info)
    ('baseline', 0, (3, ['class_0', 'class_1', 'class_2']))
    >>> [(step, path.name) for step, path in list_checkpoints(run)]
    [(0, 'step-00000000')]
"""
from __future__ import annotations

from .format import (CHECKPOINTS_DIR, FORMAT, INFO_FILE, KEEP, MODEL_FILE, OPTIM_FILE, OPTIM_JSON, READS_VERSIONS,
                     VERSION, checkpoint_classes, has_checkpoint, list_checkpoints, state_to_bytes, step_dir_name,
                     unwrap_model, validate_info)
from .load import build_model_from_info, check_weights, load_checkpoint, load_training_state
from .read import Checkpoint, load_state_dict, open_checkpoint, read_info
from .write import clean_stale_temporaries, save_checkpoint

__all__ = ["CHECKPOINTS_DIR", "FORMAT", "INFO_FILE", "KEEP", "MODEL_FILE", "OPTIM_FILE", "OPTIM_JSON",
           "READS_VERSIONS", "VERSION", "Checkpoint", "build_model_from_info", "check_weights", "checkpoint_classes",
           "clean_stale_temporaries", "has_checkpoint", "list_checkpoints", "load_checkpoint", "load_state_dict",
           "load_training_state", "open_checkpoint", "read_info", "save_checkpoint", "state_to_bytes",
           "step_dir_name", "unwrap_model", "validate_info"]
