"""Training: the loop of ``spn train`` (single process or ``torchrun`` data parallel), its
config, losses and the distributed helpers. Checkpoints are :mod:`spn.models.checkpoint`'s.

The loop is one for every task: :func:`train` takes the task (a :class:`TrainingTask`, one of
:mod:`spn.tasks`) that supplies the datasets, the model's options, the loss and the evaluation.

Example:
    >>> import tempfile
    >>> from spn.tasks import get_task
    >>> from spn.training import TrainConfig, train
    >>> cfg = TrainConfig(data="synthetic", data_options={"num_images": 2, "size": 32}, model="baseline",
    ...                   model_cfg={"width": 4, "depth": 1}, patch_size=16, batch_size=2, steps=2,
    ...                   out=tempfile.mkdtemp() + "/run", progress=False, val_split=None, threads=1)
    >>> summary = train(cfg, get_task("seg"))
    >>> summary["steps"], len(summary["losses"])
    (2, 2)
"""
from .config import DEFAULT_LR, OPTIMIZERS, TrainConfig, check_resume_compatible, load_config
from .loop import TrainingTask, read_log, total_steps, train

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "TrainConfig", "TrainingTask", "check_resume_compatible", "load_config",
           "read_log", "total_steps", "train"]
