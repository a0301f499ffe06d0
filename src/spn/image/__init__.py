"""Task-free image code: reading and writing pictures and label maps (:mod:`spn.image.io`, the one
image reader of spn, with its pixel limit), BT.601 YCbCr (:mod:`spn.image.color`) and the aligned
area-down / bilinear-up resampling pair (:mod:`spn.image.resample`).

No task owns it: datasets, models, metrics, figures and commands all read, convert and resample
pictures through it. It sits below the models (they resample) and imports only :mod:`spn.utils`.

Example:
    >>> import torch
    >>> from spn.image import area_downsample, rgb_to_ycbcr
    >>> area_downsample(rgb_to_ycbcr(torch.ones(1, 3, 4, 4)), 2).shape
    torch.Size([1, 3, 2, 2])
"""
from __future__ import annotations

from .color import rgb_to_ycbcr, ycbcr_to_rgb
from .io import (DEFAULT_MAX_PIXELS, IGNORE_INDEX, IMAGE_EXTENSIONS, MAX_PIXELS_ENV, CorruptFileError,
                 ImageTooLargeError, as_label_map, as_numpy, image_size, max_pixels, read_image, read_mask,
                 to_rgb_uint8, voc_palette, write_image, write_mask)
from .resample import area_downsample, bilinear_upsample

__all__ = ["DEFAULT_MAX_PIXELS", "IGNORE_INDEX", "IMAGE_EXTENSIONS", "MAX_PIXELS_ENV", "CorruptFileError",
           "ImageTooLargeError", "area_downsample", "as_label_map", "as_numpy", "bilinear_upsample", "image_size",
           "max_pixels", "read_image", "read_mask", "rgb_to_ycbcr", "to_rgb_uint8", "voc_palette", "write_image",
           "write_mask", "ycbcr_to_rgb"]
