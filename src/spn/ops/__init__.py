"""The spatial propagation operator and its theory (Liu et al., NIPS 2017)."""
from ._backend import active_backend, extension_available
from ._validate import DIRECTIONS
from .affinity import affinity_matrix, degree_matrix, laplacian_matrix, transformation_matrix
from .normalize import NORMALIZE_MODES, normalize_gates
from .propagation import MERGES, propagate, propagate4
from .reference import propagate4_ref, propagate_ref

__all__ = [
    "DIRECTIONS",
    "MERGES",
    "NORMALIZE_MODES",
    "active_backend",
    "affinity_matrix",
    "degree_matrix",
    "extension_available",
    "laplacian_matrix",
    "normalize_gates",
    "propagate",
    "propagate4",
    "propagate4_ref",
    "propagate_ref",
    "transformation_matrix",
]
