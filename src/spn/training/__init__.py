"""Training: the loop of ``spn train`` (single process or ``torchrun`` data parallel), its
config, losses and the distributed helpers. Checkpoints are :mod:`spn.models.checkpoint`'s.

Example:
    >>> import tempfile
    >>> from spn.training import TrainConfig, train
    >>> cfg = TrainConfig(data="synthetic", data_options={"num_images": 2, "size": 32}, model="baseline",
    ...                   model_cfg={"width": 4, "depth": 1}, patch_size=16, batch_size=2, steps=2,
    ...                   out=tempfile.mkdtemp() + "/run", progress=False, val_split=None, threads=1)
    >>> summary = train(cfg)
    >>> summary["steps"], len(summary["losses"])
    (2, 2)
"""
from .config import DEFAULT_LR, OPTIMIZERS, TASKS, TrainConfig, check_resume_compatible, load_config
from .loop import build_datasets, data_info, read_log, total_steps, train

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "TASKS", "TrainConfig", "build_datasets", "check_resume_compatible",
           "data_info", "load_config", "read_log", "total_steps", "train"]
