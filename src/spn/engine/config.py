"""The training configuration (a dataclass), its validation, JSON round trip and resume checks."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

OPTIMIZERS = ("sgd", "adam")
ON_CORRUPT = ("error", "skip")
#: default learning rate per optimizer: the paper's SGD rate, and the usual Adam rate
DEFAULT_LR = {"sgd": 1e-4, "adam": 1e-3}
#: fields a resumed run must share with the run it continues (they decide the weights)
RESUME_MUST_MATCH = ("data", "data_options", "coarse", "model", "model_cfg", "patch_size",
                     "patches_per_image", "flip", "global_batch_size", "optimizer", "lr",
                     "momentum", "weight_decay", "grad_clip", "seed")


@dataclass
class TrainConfig:
    """Everything ``spn train`` needs; ``config.json`` of a run is :meth:`to_dict` of the resolved one.

    Data: ``data`` is a dataset spec (``"synthetic"``, ``"folder:PATH"``, ``"voc:PATH"``,
    ``"helen:PATH"``) passed to :func:`spn.data.build_dataset` with ``data_options`` as extra
    keyword arguments; ``coarse`` the coarse source (``None``: the dataset's default,
    ``"gt-downsample:8"``, ``"files"``, ``"none"`` or ``"baseline:RUN_DIR"``: the softmax of a
    trained baseline, see :mod:`spn.engine.coarse`). Training patches are ``patch_size`` squares,
    ``patches_per_image`` per image and epoch, mirrored at random with ``flip``.

    Model: ``model`` (a name of :func:`spn.models.list_models`) and ``model_cfg`` (its options;
    ``num_classes`` is taken from the data).

    Optimisation: ``optimizer`` ``"adam"`` (default, ``lr`` 1e-3) or ``"sgd"`` (the paper's, with
    ``momentum`` 0.9 and ``lr`` 1e-4); ``lr=None`` picks that default. ``batch_size`` is per
    process (the effective batch is ``world_size * batch_size``). Length: ``steps`` optimizer
    updates, or ``epochs`` passes over the patches (exactly one of them; neither: 1000 steps).
    Softmax cross-entropy, ignore index 255.

    Run: ``out`` the run directory; ``resume`` continue from its last checkpoint; ``seed`` fixes
    the initialisation and the data order (sample ``n`` of the run depends only on ``(seed, n)``);
    ``log_interval`` / ``ckpt_interval`` in steps; ``threads`` torch CPU threads (None: torch's
    default, or cores / processes under torchrun); ``device`` ``"cpu"``, ``"cuda"`` or ``"auto"``;
    ``progress`` a tqdm bar (None: only when stderr is a terminal); ``on_corrupt`` ``"error"`` or
    ``"skip"`` unreadable files; ``cache`` keep decoded images in memory; ``val_split`` evaluate on
    that split at the end (None: skip), at most ``val_items`` images.
    """

    data: str = "synthetic"
    data_options: dict = field(default_factory=dict)
    coarse: str | None = None
    model: str = "spn_three_way"
    model_cfg: dict = field(default_factory=dict)
    patch_size: int = 128
    patches_per_image: int = 4
    flip: bool = True
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None
    steps: int | None = None
    epochs: float | None = None
    seed: int = 0
    num_workers: int = 0
    log_interval: int = 10
    ckpt_interval: int = 100
    out: str = "runs/spn"
    resume: bool = False
    threads: int | None = None
    device: str = "cpu"
    progress: bool | None = None
    on_corrupt: str = "error"
    cache: bool = False
    val_split: str | None = "val"
    val_items: int | None = None

    # ------------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Check types and ranges; raise ValueError/TypeError naming the field."""
        def _int(name, minimum, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"TrainConfig.{name} must be an int, got {v!r}")
            if v < minimum:
                raise ValueError(f"TrainConfig.{name} must be >= {minimum}, got {v}")

        def _num(name, minimum, allow_none=False, strict=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"TrainConfig.{name} must be a finite number, got {v!r}")
            if v < minimum or (strict and v == minimum):
                raise ValueError(f"TrainConfig.{name} must be {'>' if strict else '>='} {minimum}, got {v}")

        for name in ("data", "model", "out", "device", "optimizer", "on_corrupt"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise TypeError(f"TrainConfig.{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("data_options", "model_cfg"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"TrainConfig.{name} must be a dict, got {type(getattr(self, name)).__name__}")
        if self.coarse is not None and not isinstance(self.coarse, str):
            raise TypeError(f"TrainConfig.coarse must be a string or None, got {self.coarse!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {self.on_corrupt!r}")
        _int("patch_size", 8)
        _int("patches_per_image", 1)
        _int("batch_size", 1)
        _int("steps", 1, allow_none=True)
        _num("epochs", 0, allow_none=True, strict=True)
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give TrainConfig.steps or TrainConfig.epochs, not both")
        _int("seed", 0)
        _int("num_workers", 0)
        _int("log_interval", 1)
        _int("ckpt_interval", 1)
        _int("threads", 1, allow_none=True)
        _int("val_items", 1, allow_none=True)
        _num("lr", 0, allow_none=True, strict=True)
        _num("momentum", 0)
        _num("weight_decay", 0)
        _num("grad_clip", 0, allow_none=True, strict=True)
        for name in ("flip", "resume", "cache"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TrainConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise TypeError(f"TrainConfig.progress must be a bool or None, got {self.progress!r}")
        if self.val_split is not None and not isinstance(self.val_split, str):
            raise TypeError(f"TrainConfig.val_split must be a string or None, got {self.val_split!r}")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")
        return self

    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a dict; unknown keys -> TypeError naming them."""
        if not isinstance(d, dict):
            raise TypeError(f"a training config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TypeError(f"unknown training config key(s): {', '.join(unknown)}; "
                            f"valid keys are {', '.join(sorted(names))}")
        return cls(**d).validate()

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def load_config(path) -> TrainConfig:
    """Read a :class:`TrainConfig` from a JSON file (a run's ``config.json`` also works: its
    extra ``"resolved"`` section is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"training config {path} is not valid JSON: {exc}") from None
    if isinstance(d, dict) and "train_config" in d and isinstance(d["train_config"], dict):
        d = d["train_config"]
    try:
        return TrainConfig.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


def check_resume_compatible(old: dict, new: dict, where: str) -> None:
    """Raise ValueError when a resumed run differs from the stored one in a field of
    :data:`RESUME_MUST_MATCH` (the resolved configs, as dicts)."""
    diffs = []
    for key in RESUME_MUST_MATCH:
        if key in old and old.get(key) != new.get(key):
            diffs.append(f"{key}: stored {old.get(key)!r}, now {new.get(key)!r}")
    if diffs:
        raise ValueError(f"cannot resume {where}: the configuration differs from the stored run ("
                         + "; ".join(diffs) + "); use the same settings or a new --out")
