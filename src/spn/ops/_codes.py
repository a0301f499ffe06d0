"""The integer codes the kernels take for a direction, a merge and a ``normalize`` mode.

The one table: the Python side passes these codes to ``torch.ops.spn.*``, the Triton kernels
read them as ``constexpr`` (:mod:`spn.ops.triton.kernels`), and the C++ kernels' enums
(``csrc/propagation.cpp``, reported by ``torch.ops.spn.kernel_codes()``) are checked equal to
them by a test.
"""
from __future__ import annotations

#: scan directions, in the order of the four-direction layouts' dim 1
DIRECTION_CODES = {"left_to_right": 0, "right_to_left": 1, "top_to_bottom": 2, "bottom_to_top": 3}
#: node-wise merges of ``propagate4``
MERGE_CODES = {"max": 0, "mean": 1, "sum": 2, "none": 3}
#: gate normalisations (``None``: the gates are used as given)
NORMALIZE_CODES = {None: 0, "clip": 1, "always": 2, "gspn": 3}


def parse_kernel_codes(text: str) -> dict:
    """``"direction:left_to_right=0,...;merge:...;normalize:none=0,..."`` (what
    ``torch.ops.spn.kernel_codes()`` returns) as ``{kind: {name: code}}``; ``"none"`` of
    ``normalize`` becomes ``None``."""
    table = {}
    for part in text.split(";"):
        kind, _, items = part.partition(":")
        pairs = (item.split("=") for item in items.split(","))
        table[kind] = {(None if kind == "normalize" and k == "none" else k): int(v) for k, v in pairs}
    return table
