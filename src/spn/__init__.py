"""spn: spatial propagation networks (Liu et al., "Learning Affinity via Spatial Propagation
Networks", NIPS 2017): the exact operator, fast kernels, and segmentation refinement.

``spn.Refiner`` (the Python API for your own images and coarse maps) is
:class:`spn.inference.Refiner`; ``spn.refine(image, mask) -> mask`` refines one object's mask
with the refiner shipped in the package (:func:`spn.inference_mask.refine`), and
``spn.MaskRefiner`` (``spn.Refiner.pretrained()`` returns one) is
:class:`spn.inference_mask.MaskRefiner`. They are imported on first use so that ``import spn``
stays light.
"""
__version__ = "0.1.0"

import os as _os

# Large CPU tensors (gates, gate gradients) are allocated fresh every step; backing them with
# transparent huge pages cuts the page-fault cost of first touch by about 2.5x. PyTorch reads
# this once, at its first CPU allocation, so it only takes effect when spn is imported before
# torch allocates. Opt out with SPN_NO_THP=1.
if _os.environ.get("SPN_NO_THP", "0") != "1":
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from . import ops  # noqa: E402
from .ops import normalize_gates, propagate, propagate4, propagate_ref  # noqa: E402

__all__ = ["__version__", "ops", "normalize_gates", "propagate", "propagate4", "propagate_ref", "MaskRefiner", "Refiner",
           "refine"]


def __getattr__(name):
    # the lazy re-exports of the higher layers (tests/test_layers.py, ROOT_LAZY, allows exactly these)
    if name == "Refiner":
        from .inference import Refiner

        return Refiner
    if name in ("MaskRefiner", "refine"):
        from . import inference_mask

        return getattr(inference_mask, name)
    raise AttributeError(f"module 'spn' has no attribute {name!r}")
