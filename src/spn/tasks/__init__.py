"""Tasks as plugins: what ``spn train / eval / compare / refine / demo --task NAME`` does.

A task is one object, registered under its name with :func:`register_task`, that supplies
everything that differs between tasks (the :class:`Task` protocol): the datasets with their
conditioning input (coarse maps for segmentation, the subsampled chroma for chroma), the models,
the loss and the final evaluation (the part of the training loop, :class:`spn.training.TrainingTask`),
the evaluation, comparison, inference (refine) and demo of the commands, the classical peers,
and one options dataclass per command holding the task's own options (the command line's
options of that task are generated from it). The commands keep the shared options in their own
config dataclass and never branch on a task's name.

One module per task: :mod:`spn.tasks.segmentation` (``seg``, the default),
:mod:`spn.tasks.chroma` (``chroma``) and :mod:`spn.tasks.mask` (``mask``).

Example:
    >>> from spn.tasks import get_task, list_tasks
    >>> list_tasks()
    ['seg', 'chroma', 'mask']
    >>> get_task("chroma").options["train"].__name__
    'ChromaTrainOptions'
    >>> get_task("depth")
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'depth'; valid tasks are seg, chroma, mask
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

from spn.training import TrainConfig
from spn.training import train as _train_loop
from spn.utils.config import ConfigBase

__all__ = ["COMMANDS", "DEFAULT_TASK", "BaseTask", "NoOptions", "Task", "get_task", "list_tasks", "register_task",
           "task_options", "train"]

#: the commands a task supplies options for (``Task.options`` keys)
COMMANDS = ("train", "eval", "compare", "refine", "demo")


class Task(Protocol):
    """What a task supplies (see the module docstring; :mod:`spn.tasks.chroma` is the worked
    example). Besides the methods of :class:`spn.training.TrainingTask` (``prepare``,
    ``build_datasets``, ``data_info``, ``patches``, ``model_options``, ``loss``, ``evaluate``),
    the methods below; :class:`BaseTask` has defaults for all but the loop's part."""

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


@dataclass
class NoOptions(ConfigBase):
    """The options dataclass of a command for which a task has no options of its own."""


class BaseTask:
    """Defaults for a task: no options of its own (:class:`NoOptions`) where ``options`` names no
    dataclass, the train options resolved from ``cfg.task_options`` in :meth:`prepare`, the model
    name as given, no peers, and commands it does not supply answered by an error naming them.
    A task that only trains (its loop part: ``build_datasets``, ``data_info``, ``patches``,
    ``model_options``, ``loss``, ``evaluate``) subclasses it and sets ``name``, ``help`` and
    ``options = {"train": ItsTrainOptions}``."""

    name: str = ""
    help: str = ""
    options: Mapping[str, type] = {}

    def train_options(self, task_options: dict):
        """The task's train options of a config's ``task_options`` (defaults filled in, checked)."""
        return self.options["train"].from_dict(dict(task_options))

    def prepare(self, cfg: TrainConfig) -> TrainConfig:
        return cfg.replace(task=self.name, task_options=self.train_options(cfg.task_options).to_dict())

    def model_name(self, name: str) -> str:
        return name

    def peers(self) -> list[str]:
        return []

    def train_summary(self, summary: dict) -> str | None:
        return None

    def _unsupported(self, command: str):
        raise ValueError(f"--task {self.name} has no `spn {command}`")

    def dataset(self, data: str, split: str, opts, **kw):
        self._unsupported("eval")

    def eval(self, cfg, opts):
        self._unsupported("eval")

    def compare(self, cfg, opts):
        self._unsupported("compare")

    def refine(self, cfg, opts):
        self._unsupported("refine")

    def demo(self, opts):
        self._unsupported("demo")


_TASKS: dict[str, Task] = {}
DEFAULT_TASK = "seg"


def register_task(task: Task) -> Task:
    """Register ``task`` under ``task.name`` (one call per task module); returns it. A command
    for which ``task.options`` names no dataclass gets :class:`NoOptions`. A task without a name
    or the training loop's methods, or a name taken -> ValueError."""
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a task needs a name, got {name!r}")
    if name in _TASKS:
        raise ValueError(f"task {name!r} is registered twice")
    missing = [m for m in ("prepare", "build_datasets", "data_info", "patches", "model_options", "loss", "evaluate",
                           "eval", "compare", "refine", "demo") if not callable(getattr(task, m, None))]
    if missing:
        raise ValueError(f"task {name!r} lacks {', '.join(missing)} (see spn.tasks.Task; BaseTask has defaults)")
    options = dict(getattr(task, "options", None) or {})
    task.options = {c: options.get(c, NoOptions) for c in COMMANDS}
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
from . import chroma, mask, segmentation  # noqa: E402,F401  (after the registry they register into)

_TASKS = {name: _TASKS[name] for name in (DEFAULT_TASK, *[n for n in _TASKS if n != DEFAULT_TASK])}
