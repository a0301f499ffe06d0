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


# --- the timer ---------------------------------------------------------------------------------

def test_time_fn_counts_and_budgets():
    from spn.utils.timer import time_fn

    calls = []
    t = time_fn("f", lambda: calls.append(1), warmup=3, repeats=5)
    assert len(calls) == 3 + 5 and t.repeats == 5 and len(t.samples_ms) == 5
    assert t.min_ms <= t.median_ms and t.min_ms <= t.mean_ms
    # a call slower than the budget: stop after min_repeats samples
    import time as _time

    calls.clear()
    t = time_fn("slow", lambda: (calls.append(1), _time.sleep(0.02)), warmup=0, repeats=50, max_time_s=0.01,
                min_repeats=2)
    assert t.repeats == 2 and len(calls) == 2 and t.min_ms >= 20
    # min_time_s keeps going past `repeats`
    t = time_fn("min", lambda: _time.sleep(0.005), warmup=0, repeats=1, min_time_s=0.03)
    assert t.repeats >= 4
    with pytest.raises(ValueError, match="repeats"):
        time_fn("x", lambda: None, repeats=0)


def test_time_fn_seeds_and_leaves_the_generator_alone_with_none():
    from spn.utils.timer import time_fn

    draws = []
    time_fn("r", lambda: draws.append(torch.rand(1).item()), warmup=0, repeats=1, seed=7)
    torch.manual_seed(7)
    assert draws[0] == torch.rand(1).item()
    torch.manual_seed(3)
    state = torch.get_rng_state()
    time_fn("n", lambda: None, warmup=1, repeats=2, seed=None)
    assert torch.equal(torch.get_rng_state(), state)


def test_stopwatch_samples_each_event():
    import time as _time

    from spn.utils.timer import Stopwatch

    sw = Stopwatch()
    with pytest.raises(ValueError, match="no samples"):
        sw.summary()
    for d in (0.01, 0.03, 0.02):
        with sw.time():
            _time.sleep(d)
    s = sw.summary()
    assert s["n"] == 3 and 0.02 <= s["median"] < 0.05 and s["mean"] >= 0.02
    assert sorted(sw.samples)[0] >= 0.01


# --- config fields and their JSON round trip ------------------------------------------------------

def _cfg_class():
    from dataclasses import dataclass

    from spn.utils.config import ConfigBase, option

    @dataclass
    class Cfg(ConfigBase):
        section = "cfg"
        name: str = option(help="a name")
        steps: int = option(10, help="steps", minimum=1)
        extra: dict = option(default_factory=dict, help="extra")

        def validate(self):
            if self.steps > 100:
                raise ValueError("steps must be <= 100")
            return self

    return Cfg


def test_config_json_round_trip_and_errors(tmp_path):
    Cfg = _cfg_class()
    cfg = Cfg(name="a", steps=3, extra={"k": [1, 2]})
    assert Cfg.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "bare.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "run.json").write_text(json.dumps({"cfg": cfg.to_dict(), "other": 1}))
    assert Cfg.load(tmp_path / "bare.json") == cfg == Cfg.load(tmp_path / "run.json")
    with pytest.raises(TypeError, match="unknown Cfg key.*bogus.*valid keys are extra, name, steps"):
        Cfg.from_dict({"name": "a", "bogus": 1})
    with pytest.raises(ValueError, match="<= 100"):  # from_dict validates
        Cfg.from_dict({"name": "a", "steps": 500})
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        Cfg.load(tmp_path / "nowhere.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        Cfg.load(tmp_path / "bad.json")
    assert cfg.replace(steps=4).steps == 4 and cfg.steps == 3


def test_sha256_file_matches_hashlib_across_blocks(tmp_path):
    """Hashed in 1 MiB blocks, the digest equals hashlib's over the whole bytes (a file of 2.5 blocks)."""
    import hashlib

    from spn.utils.io import sha256_file

    data = bytes(range(256)) * (10 * 1024)  # 2.5 MiB
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
