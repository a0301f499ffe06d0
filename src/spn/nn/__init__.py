"""Neural-network modules built on :mod:`spn.ops`."""
from .propagation import CONNECTIONS, SpatialPropagation, reshape_gates

__all__ = ["CONNECTIONS", "SpatialPropagation", "reshape_gates"]
