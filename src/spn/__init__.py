"""spn: spatial propagation networks (Liu et al., "Learning Affinity via Spatial Propagation
Networks", NIPS 2017): the exact operator, fast kernels, and segmentation refinement."""
__version__ = "0.1.0"

from . import ops  # noqa: E402
from .ops import normalize_gates, propagate, propagate4, propagate_ref  # noqa: E402

__all__ = ["__version__", "ops", "normalize_gates", "propagate", "propagate4", "propagate_ref"]
