"""The training and validation datasets of a task that reads one ``--data`` spec for both."""
from __future__ import annotations

from spn.data import build_dataset


def train_val_datasets(cfg, kw: dict, train_dataset=None, val_dataset=None, need_val: bool = True):
    """``(train, val, note)`` for the loop: the ``train`` split of ``cfg.data`` (or
    ``train_dataset``) and its ``cfg.val_split`` (or ``val_dataset``), built with the dataset
    options ``kw``. A missing or empty validation split is no error: ``val`` is then ``None`` and
    ``note`` says why (the loop warns with it); an empty training split is a ValueError."""
    train = train_dataset if train_dataset is not None else build_dataset(cfg.data, split="train", **kw)
    val, note = val_dataset, None
    if val is None and need_val and cfg.val_split and train_dataset is None:
        try:
            val = build_dataset(cfg.data, split=cfg.val_split, **kw)
        except (ValueError, FileNotFoundError) as exc:
            note, val = f"no validation split {cfg.val_split!r}: {exc}", None
    if len(train) == 0:
        raise ValueError(f"the training dataset {cfg.data!r} is empty")
    if val is not None and len(val) == 0:
        note, val = f"no final evaluation: the validation split {cfg.val_split!r} of {cfg.data} is empty", None
    return train, val, note
