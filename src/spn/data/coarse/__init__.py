"""Coarse segmentation maps: where the SPN's input probabilities come from.

A *coarse source* names how a dataset fills the ``"coarse"`` key of its items:

``"files"``
    maps stored next to the data (``ROOT/coarse/NAME.npy`` or ``NAME.png`` for the folder
    dataset, ``coarse_dir=`` for VOC and HELEN), read by :func:`read_coarse_file`, the one
    reader of a stored coarse map (``spn refine`` reads its ``--coarse`` files with it too).
``"gt-downsample:F"``
    a simulated coarse segmentation made from the ground truth by
    :func:`make_coarse_from_mask` (one-hot, area-downsampled by ``F``, blurred a little,
    bilinearly upsampled back). Deterministic.
``"none"``
    no ``"coarse"`` key at all.
``"PREFIX:ARG"`` of a registered *wrapping* source
    the dataset is built with ``"none"`` and wrapped by the source's function
    (:func:`register_coarse_source`); ``"baseline:RUN_DIR"`` (the softmax of a trained
    baseline, :class:`spn.data.baseline.BaselineCoarse`) is one.

Every coarse map is a float32 ``(K, H, W)`` tensor of class probabilities (non-negative,
summing to one over ``K`` at every pixel) at the resolution of the image.

Stored maps are read by one function whatever the command (:func:`read_coarse_file`), and
arrays from Python (:class:`spn.inference.Refiner`) are converted by the same one
(:func:`prepare_coarse`). What a map holds is declared, never guessed from its values:

- the *kind*: ``probs`` (``(K, h, w)`` probabilities), ``logits`` (``(K, h, w)`` scores, softmax
  over ``K``) or ``labels`` (``(h, w)`` class ids, the only kind of a ``.png``), optionally with a
  scale (``probs:255``: uint8 probabilities); integer data declared probs/logits need a scale;
- declared by the option (``--coarse-kind``, ``coarse_kind=``), else by a sidecar file
  ``coarse.json`` in the folder of the maps (``{"kind": "logits"}``, ``{"kind": "probs",
  "scale": 255}``); the option wins over the sidecar (with a warning when they differ);
- by default ``probs`` for ``.npy`` files and ``labels`` for ``.png`` files.

A map that contradicts its kind (probabilities that do not sum to one within ``1e-3``, negative
probabilities, uint8 values without a scale, a wrong class count) is an error that says what to
declare, and so is a map whose aspect ratio differs from its image's by more than 10 %
(:func:`check_coverage`).

Shape:
    - mask: ``(H, W)`` int class ids (255 = ignore)
    - coarse: ``(K, H, W)`` float32 probabilities

Example:
    >>> import torch
    >>> from spn.data import make_coarse_from_mask
    >>> mask = torch.zeros(32, 32, dtype=torch.long)
    >>> mask[8:24, 8:24] = 1
    >>> coarse = make_coarse_from_mask(mask, num_classes=2, factor=8)
    >>> coarse.shape, bool(torch.allclose(coarse.sum(0), torch.ones(32, 32)))
    (torch.Size([2, 32, 32]), True)
"""
from __future__ import annotations

from .convert import ASPECT_TOLERANCE, check_coverage, coarse_to_probs, prepare_coarse
from .files import load_coarse_array, read_coarse_file
from .kinds import COARSE_KINDS, SIDECAR, CoarseKind, coarse_kind_option, parse_coarse_kind, read_sidecar, resolve_coarse_kind
from .simulate import gaussian_blur, make_coarse_from_mask, one_hot_mask, resize_probs
from .sources import (_WRAPPERS, COARSE_SOURCES, CoarseSource, absolute_coarse_spec, parse_coarse_source,
                      register_coarse_source, wrap_coarse_source, wrapping_source)

__all__ = ["ASPECT_TOLERANCE", "COARSE_KINDS", "COARSE_SOURCES", "SIDECAR", "CoarseKind", "CoarseSource",
           "absolute_coarse_spec", "check_coverage", "coarse_kind_option", "coarse_to_probs", "gaussian_blur",
           "load_coarse_array", "make_coarse_from_mask", "one_hot_mask", "parse_coarse_kind", "parse_coarse_source",
           "prepare_coarse", "read_coarse_file", "read_sidecar", "register_coarse_source", "resize_probs",
           "resolve_coarse_kind", "wrap_coarse_source", "wrapping_source"]
