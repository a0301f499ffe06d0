"""Datasets for segmentation refinement, coarse sources, image and label I/O, and the sampling
of training patches.

Items are dicts: ``"image"`` float32 ``(3, H, W)`` in [0, 1], ``"mask"`` int64 ``(H, W)``
(255 = ignore), ``"coarse"`` float32 ``(K, H, W)`` probabilities (absent with coarse source
``"none"``), ``"name"`` str. Datasets expose ``num_classes``, ``class_names``, ``ignore_index``.

``build_dataset(spec, split, coarse, **kw)`` with spec ``"synthetic"``, ``"folder:PATH"``,
``"voc:PATH"``, ``"helen:PATH"`` and coarse ``"files"``, ``"gt-downsample:F"``, ``"none"`` or
``"baseline:RUN_DIR"``; ``PatchDataset`` crops training patches; :mod:`spn.data.sampling` maps
a run's sample numbers to patches.

Shape:
    - item["image"]: ``(3, H, W)`` float32
    - item["mask"]: ``(H, W)`` int64
    - item["coarse"]: ``(K, H, W)`` float32

Example:
    >>> from spn.data import build_dataset
    >>> item = build_dataset("synthetic", split="val", num_images=1, size=32)[0]
    >>> item["image"].shape, item["mask"].shape, item["coarse"].shape
    (torch.Size([3, 32, 32]), torch.Size([32, 32]), torch.Size([6, 32, 32]))
"""
from .base import FileSegmentationDataset, Record, SegmentationDataset, infer_num_classes
from .coarse import (ASPECT_TOLERANCE, COARSE_KINDS, COARSE_SOURCES, SIDECAR, CoarseKind, CoarseSource,
                     absolute_coarse_spec, check_coverage, coarse_to_probs, gaussian_blur, load_coarse_array,
                     make_coarse_from_mask, one_hot_mask, parse_coarse_kind, parse_coarse_source, prepare_coarse,
                     read_coarse_file, read_sidecar, register_coarse_source, resize_probs, resolve_coarse_kind,
                     wrap_coarse_source)
from .baseline import BaselineCoarse
from .folder import FolderDataset
from .helen import HELEN_CLASSES, HelenFaces, combine_component_maps, read_landmarks
from ..image.io import (IGNORE_INDEX, CorruptFileError, as_label_map, as_numpy, read_image, read_mask,
                        to_rgb_uint8, voc_palette, write_image, write_mask)
from .patches import PatchDataset
from .color import chroma_item
from ..image.color import rgb_to_ycbcr, ycbcr_to_rgb
from .photos import SKIMAGE_PHOTOS, SKIMAGE_SPLITS, PhotoDataset, PhotoPatches
from .registry import absolute_data_spec, build_dataset, dataset_prefixes, register_dataset
from .synthetic import SYNTHETIC_CLASSES, SyntheticConfig, SyntheticScenes, render_scene
from .voc import VOC_CLASSES, VOCSegmentation, resolve_voc_root

__all__ = [
    "build_dataset", "register_dataset", "dataset_prefixes", "absolute_data_spec", "absolute_coarse_spec",
    "SegmentationDataset", "FileSegmentationDataset", "Record", "infer_num_classes",
    "SyntheticScenes", "SyntheticConfig", "SYNTHETIC_CLASSES", "render_scene",
    "FolderDataset", "VOCSegmentation", "VOC_CLASSES", "resolve_voc_root",
    "HelenFaces", "HELEN_CLASSES", "combine_component_maps",
    "read_landmarks",
    "PatchDataset", "BaselineCoarse",
    "PhotoDataset", "PhotoPatches", "SKIMAGE_PHOTOS", "SKIMAGE_SPLITS", "chroma_item", "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "COARSE_SOURCES", "CoarseSource", "parse_coarse_source", "make_coarse_from_mask",
    "read_coarse_file", "resize_probs", "one_hot_mask", "gaussian_blur",
    "COARSE_KINDS", "SIDECAR", "ASPECT_TOLERANCE", "CoarseKind", "parse_coarse_kind", "read_sidecar",
    "resolve_coarse_kind", "coarse_to_probs", "prepare_coarse", "check_coverage", "load_coarse_array",
    "register_coarse_source", "wrap_coarse_source",
    "IGNORE_INDEX", "CorruptFileError", "read_image", "read_mask", "write_image", "write_mask",
    "voc_palette", "as_label_map", "as_numpy", "to_rgb_uint8",
]
