"""``spn info``: version, active backend and threads."""
from __future__ import annotations

import json
from dataclasses import dataclass

from spn.utils.config import ConfigBase, option

from .options import add_config_options, build_config

HELP = "show the version, the active propagation backend and the thread count"


@dataclass
class InfoConfig(ConfigBase):
    json: bool = option(False, help="print as JSON")


def add_arguments(p) -> None:
    add_config_options(p, InfoConfig, config_file=False)


def collect() -> dict:
    """What ``spn info`` shows: versions, the propagation backend per device, threads, CUDA."""
    import platform

    import torch

    import spn
    from spn.ops import _backend

    info = {
        "spn": spn.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "backend_cpu": _backend.active_backend("cpu"),
        "extension_error": _backend.extension_error(),
        "threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "backend_cuda": _backend.active_backend("cuda"),
        **_backend.triton_info(),
    }
    return info


def run(args) -> int:
    cfg = build_config(InfoConfig, args)
    info = collect()
    if cfg.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            if k in ("extension_error", "triton_error") and v is None:
                continue
            print(f"{k:16s} {v}")
    return 0
