"""Tasks as plugins: what ``spn train / eval / compare / refine / demo --task NAME`` does.

A task is one object, registered under its name with :func:`register_task`, that supplies
everything that differs between tasks (the :class:`Task` protocol): the datasets with their
conditioning input (coarse maps for segmentation, the subsampled chroma for chroma), the models,
the loss and the final evaluation (the part of the training loop, :class:`spn.training.TrainingTask`),
the evaluation, comparison, inference (refine) and demo of the commands, the classical peers,
and one options dataclass per command holding the task's own options (the command line's
options of that task are generated from it). The commands keep the shared options in their own
config dataclass and never branch on a task's name.

One module per task: :mod:`spn.tasks.segmentation` (``seg``, the default) and
:mod:`spn.tasks.chroma` (``chroma``).

Example:
    >>> from spn.tasks import get_task, list_tasks
    >>> list_tasks()
    ['seg', 'chroma']
    >>> get_task("chroma").options["train"].__name__
    'ChromaTrainOptions'
    >>> get_task("depth")
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'depth'; valid tasks are seg, chroma
"""
from __future__ import annotations

from typing import Mapping, Protocol

from spn.training import TrainConfig
from spn.training import train as _train_loop

__all__ = ["COMMANDS", "DEFAULT_TASK", "Task", "get_task", "list_tasks", "register_task", "task_options", "train"]

#: the commands a task supplies options for (``Task.options`` keys)
COMMANDS = ("train", "eval", "compare", "refine", "demo")


class Task(Protocol):
    """What a task supplies (see the module docstring; :mod:`spn.tasks.chroma` is the worked
    example). Besides the methods of :class:`spn.training.TrainingTask` (``prepare``,
    ``build_datasets``, ``data_info``, ``patches``, ``model_options``, ``loss``, ``evaluate``):"""

    name: str
    #: one line for ``--task``'s help
    help: str
    #: command -> the options dataclass of this task's own options for it (:data:`COMMANDS`)
    options: Mapping[str, type]

    def model_name(self, name: str) -> str:
        """The model ``spn train --model NAME`` trains for this task (or ValueError)."""

    def dataset(self, data: str, split: str, opts, **kw):
        """The dataset ``data`` (split ``split``) with the task's conditioning input."""

    def peers(self) -> list[str]:
        """The names of the classical methods this task compares with."""

    def train_summary(self, summary: dict) -> str | None:
        """The line ``spn train`` prints about the final evaluation (None: nothing)."""

    def eval(self, cfg, opts) -> tuple[dict, str]:
        """``spn eval``: ``(result, markdown)`` of a checkpoint (``cfg``: :class:`spn.evaluation.EvalConfig`)."""

    def compare(self, cfg, opts) -> dict:
        """``spn compare`` (``cfg``: :class:`spn.experiments.compare.CompareConfig`)."""

    def refine(self, cfg, opts) -> str:
        """``spn refine`` (``cfg``: the command's ``RefineConfig``); returns the line to print."""

    def demo(self, opts) -> dict:
        """``spn demo``: ``opts`` is the task's whole demo config (``options["demo"]``)."""


_TASKS: dict[str, Task] = {}
DEFAULT_TASK = "seg"


def register_task(task: Task) -> Task:
    """Register ``task`` under ``task.name`` (one call per task module); returns it. A task
    without an options dataclass for every command, or a name taken -> ValueError."""
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a task needs a name, got {name!r}")
    if name in _TASKS:
        raise ValueError(f"task {name!r} is registered twice")
    missing = [c for c in COMMANDS if c not in getattr(task, "options", {})]
    if missing:
        raise ValueError(f"task {name!r} has no options dataclass for {', '.join(missing)}")
    _TASKS[name] = task
    return task


def list_tasks() -> list[str]:
    """The registered task names (the default first)."""
    return list(_TASKS)


def get_task(name: str | None = None) -> Task:
    """The task ``name`` (None: :data:`DEFAULT_TASK`); an unknown name -> ValueError listing the valid ones."""
    name = DEFAULT_TASK if name is None else name
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks are {', '.join(_TASKS)}")
    return _TASKS[name]


def task_options(command: str) -> dict[str, type]:
    """Task name -> its options dataclass for ``command`` (what the command line is built from)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; valid: {', '.join(COMMANDS)}")
    return {name: task.options[command] for name, task in _TASKS.items()}


def train(cfg: TrainConfig, **kw) -> dict:
    """:func:`spn.training.train` with the task ``cfg.task`` names (None: the default task)."""
    return _train_loop(cfg, get_task(cfg.task), **kw)


# the tasks (one module each; importing it registers the task)
from . import chroma, segmentation  # noqa: E402,F401  (after the registry they register into)

_TASKS = {name: _TASKS[name] for name in (DEFAULT_TASK, *[n for n in _TASKS if n != DEFAULT_TASK])}
