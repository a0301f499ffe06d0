"""Datasets for segmentation refinement.

Items are dicts: ``"image"`` float32 ``(3, H, W)`` in [0, 1], ``"mask"`` int64 ``(H, W)``
(255 = ignore), ``"coarse"`` float32 ``(K, H, W)`` probabilities (absent with coarse source
``"none"``), ``"name"`` str. Datasets expose ``num_classes``, ``class_names``, ``ignore_index``.

``build_dataset(spec, split, coarse, **kw)`` with spec ``"synthetic"``, ``"folder:PATH"``,
``"voc:PATH"``, ``"helen:PATH"``; ``PatchDataset`` crops training patches.
"""
from .base import FileSegmentationDataset, Record, SegmentationDataset, infer_num_classes
from .coarse import (COARSE_SOURCES, CoarseSource, gaussian_blur, make_coarse_from_mask,
                     one_hot_mask, parse_coarse_source, read_coarse_file, resize_probs,
                     scores_to_probs)
from .folder import FolderDataset
from .helen import (HELEN_CLASSES, HELEN_GROUPS, HelenFaces, combine_component_maps, group_scores,
                    read_landmarks)
from .io import (IGNORE_INDEX, CorruptFileError, read_image, read_mask, voc_palette, write_image,
                 write_mask)
from .patches import PatchDataset
from .registry import build_dataset, dataset_prefixes, register_dataset
from .synthetic import SYNTHETIC_CLASSES, SyntheticConfig, SyntheticScenes, render_scene
from .voc import VOC_CLASSES, VOCSegmentation, resolve_voc_root

__all__ = [
    "build_dataset", "register_dataset", "dataset_prefixes",
    "SegmentationDataset", "FileSegmentationDataset", "Record", "infer_num_classes",
    "SyntheticScenes", "SyntheticConfig", "SYNTHETIC_CLASSES", "render_scene",
    "FolderDataset", "VOCSegmentation", "VOC_CLASSES", "resolve_voc_root",
    "HelenFaces", "HELEN_CLASSES", "HELEN_GROUPS", "group_scores", "combine_component_maps",
    "read_landmarks",
    "PatchDataset",
    "COARSE_SOURCES", "CoarseSource", "parse_coarse_source", "make_coarse_from_mask",
    "read_coarse_file", "scores_to_probs", "resize_probs", "one_hot_mask", "gaussian_blur",
    "IGNORE_INDEX", "CorruptFileError", "read_image", "read_mask", "write_image", "write_mask",
    "voc_palette",
]
