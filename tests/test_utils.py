"""spn.utils: strict JSON and atomic writes, the timer, config fields and their JSON round trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spn.utils.io import write_json, write_markdown


def test_write_json_nan_and_atomic(tmp_path):
    p = write_json(tmp_path / "sub" / "m.json", {"a": math.nan, "b": torch.tensor([1.5]),
                                                        "c": (1, 2), "d": np.float32(2.0)})
    data = json.loads(p.read_text())
    assert data == {"a": None, "b": [1.5], "c": [1, 2], "d": 2.0}
    assert [q.name for q in p.parent.iterdir()] == ["m.json"]
    with pytest.raises(TypeError, match="object"):
        write_json(tmp_path / "x.json", {"a": object()})
    assert not (tmp_path / "x.json").exists()
    md = write_markdown(tmp_path / "r.md", "# hi")
    assert md.read_text() == "# hi\n"
