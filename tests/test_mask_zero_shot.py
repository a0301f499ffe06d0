"""The zero-shot evaluation of the mask refiner and its demo, on tiny fixtures built here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spn.data.composites import perturb_mask
from spn.experiments.mask_demo import MaskDemoConfig, run_mask_demo
from spn.experiments.mask_zero_shot import ZeroShotConfig, paired_intervals, run_zero_shot
from spn.inference_mask import MaskRefiner
from spn.metrics.boundary import BoundaryScores
from spn.models import create_model
from spn.peers import get_peer


def _items():
    """Two objects on two small photos: a bright rectangle on noise, a dark disc on a ramp."""
    g = torch.Generator().manual_seed(0)
    img1 = torch.rand(3, 40, 48, generator=g) * 0.3
    m1 = torch.zeros(40, 48, dtype=torch.long)
    m1[10:28, 12:36] = 1
    img1[:, m1 == 1] += 0.6
    yy, xx = torch.meshgrid(torch.arange(36), torch.arange(44), indexing="ij")
    m2 = (((yy - 18) ** 2 + (xx - 20) ** 2) < 100).long()
    img2 = (xx / 44.0).expand(3, 36, 44).clone()
    img2[:, m2 == 1] = 0.05
    return [{"image": img1.clamp(0, 1), "mask": m1, "name": "rect", "label": "box"},
            {"image": img2, "mask": m2, "name": "disc", "label": "plate"}]


@pytest.fixture(scope="module")
def refiner():
    torch.manual_seed(0)
    return MaskRefiner(create_model("mask_refiner", guidance_width=4))


def _direct(items, fn, seed, draws=1):
    """Summed IoU, and boundary IoU / mBA of BoundaryScores fed every object (every draw of it,
    seeds ``seed .. seed + draws - 1``), computed here."""
    inter = union = 0
    b = BoundaryScores(2, widths=(1,))
    for i, it, r in ((i, it, r) for i, it in enumerate(items) for r in range(draws)):
        coarse = perturb_mask(it["mask"].float(), np.random.default_rng([seed + r, i]))
        pred = (torch.as_tensor(fn(it["image"], coarse)) >= 0.5).numpy()
        t = it["mask"].numpy() == 1
        inter += int((pred & t).sum())
        union += int((pred | t).sum())
        b.update(torch.from_numpy(pred.astype(np.int64)), it["mask"])
    m = b.compute()
    return inter / union, m["boundary_iou"], m["mba"]


def test_zero_shot_table_matches_a_direct_call_of_the_metrics(tmp_path, refiner):
    items = _items()
    methods = ["coarse", "spn", "guided_filter"]
    cfg = ZeroShotConfig(out=str(tmp_path), sets=["toy"], coarse=["perturbed"], methods=methods, seed=3,
                         figure_rows=2, threads=1)
    res = run_zero_shot(cfg, datasets={"toy": items}, refiner=refiner)
    gf = get_peer("guided_filter", radius=8, eps=1e-3)
    fns = {"coarse": lambda image, c: c,
           "spn": lambda image, c: refiner.refine_proba(image, c.numpy()),
           "guided_filter": lambda image, c: gf.refine(image, torch.stack([1 - c, c]))[1]}
    scores = res["sets"]["toy"]["perturbed"]["scores"]
    assert list(scores) == methods and res["sets"]["toy"]["perturbed"]["objects"] == 2
    table = (tmp_path / "zero_shot.md").read_text()
    assert "| method | IoU % | boundary IoU % | mBA % | s / object |" in table
    d = res["sets"]["toy"]["perturbed"]["intervals"]["coarse"]["iou"][0]
    assert f"SPN - coarse: IoU {100 * d:+.2f} [" in table
    for m in methods:
        iou, biou, mba = _direct(items, fns[m], seed=3)
        assert scores[m]["iou"] == pytest.approx(iou, abs=1e-12)
        assert scores[m]["boundary_iou"] == pytest.approx(biou, abs=1e-12)
        assert scores[m]["mba"] == pytest.approx(mba, abs=1e-12)
        assert f"| {m} | {100 * iou:.2f} | {100 * biou:.2f} | {100 * mba:.2f} |" in table
    stored = json.loads((tmp_path / "zero_shot.json").read_text())
    assert stored["sets"]["toy"]["perturbed"]["scores"]["spn"]["iou"] == pytest.approx(scores["spn"]["iou"])
    assert [o["name"] for o in stored["sets"]["toy"]["perturbed"]["per_object"]] == ["rect", "disc"]


def test_summed_iou_is_not_the_mean_of_the_objects_ious(tmp_path):
    # a big object found exactly and a tiny one missed: summed IoU ~ 1, the mean of IoUs 0.5
    big = torch.zeros(40, 40, dtype=torch.long)
    big[2:38, 2:38] = 1
    small = torch.zeros(40, 40, dtype=torch.long)
    small[5:7, 5:7] = 1
    items = [{"image": torch.zeros(3, 40, 40), "mask": big}, {"image": torch.zeros(3, 40, 40), "mask": small}]
    cfg = ZeroShotConfig(out=str(tmp_path), sets=["toy"], coarse=["perturbed"], methods=["coarse"],
                         figure_rows=0, threads=1)
    res = run_zero_shot(cfg, datasets={"toy": items})
    rows = res["sets"]["toy"]["perturbed"]["per_object"]
    inter = sum(r["coarse"]["intersection"] for r in rows)
    union = sum(r["coarse"]["union"] for r in rows)
    assert res["sets"]["toy"]["perturbed"]["scores"]["coarse"]["iou"] == pytest.approx(inter / union)
    assert union >= 36 * 36


def test_grabcut_and_selfie_sources(tmp_path):
    pytest.importorskip("cv2")
    items = _items()
    cfg = ZeroShotConfig(out=str(tmp_path), sets=["toy"], coarse=["grabcut", "selfie"], methods=["coarse"],
                         figure_rows=0, threads=1)
    res = run_zero_shot(cfg, datasets={"toy": items})
    gc = res["sets"]["toy"]["grabcut"]
    assert gc["objects"] == 2 and gc["scores"]["coarse"]["iou"] > 0.5  # a contrasted object in its box
    assert "skipped" in res["sets"]["toy"]["selfie"]  # no person here (or no mediapipe)


def test_bad_options_are_one_clear_error():
    with pytest.raises(ValueError, match="unknown coarse"):
        ZeroShotConfig(coarse=["sam"])
    with pytest.raises(ValueError, match="unknown methods"):
        ZeroShotConfig(methods=["cascadepsp"])
    with pytest.raises(FileNotFoundError, match="do not exist"):
        run_zero_shot(ZeroShotConfig(methods=["spn"], weights="/nonexistent/w.safetensors"), datasets={})


def test_mask_demo_writes_its_report(tmp_path, refiner):
    from spn.peers import densecrf_available

    if not densecrf_available():
        pytest.skip("pydensecrf2 is not installed (the demo's dense CRF)")
    res = run_mask_demo(MaskDemoConfig(out=str(tmp_path), figure_rows=1, threads=1),
                        datasets={"toy": _items()}, refiner=refiner)
    text = (tmp_path / "report.md").read_text()
    assert "toy (2 objects): SPN IoU" in text and "vs densecrf" in text
    assert set(res["sets"]["toy"]["perturbed"]["scores"]) == {"coarse", "spn", "densecrf"}


def test_truth_as_coarse_scores_one(tmp_path):
    cfg = ZeroShotConfig(out=str(tmp_path), sets=["toy"], coarse=["truth"], methods=["coarse"], figure_rows=0,
                         threads=1)
    s = run_zero_shot(cfg, datasets={"toy": _items()})["sets"]["toy"]["truth"]["scores"]["coarse"]
    assert (s["iou"], s["boundary_iou"], s["mba"]) == (1.0, 1.0, 1.0)


def test_draws_score_every_draw_and_draw_zero_is_the_single_draw(tmp_path):
    items = _items()
    one = run_zero_shot(ZeroShotConfig(out=str(tmp_path / "one"), sets=["toy"], coarse=["perturbed", "truth"],
                                       methods=["coarse"], seed=5, figure_rows=0, threads=1),
                        datasets={"toy": items})["sets"]["toy"]
    three = run_zero_shot(ZeroShotConfig(out=str(tmp_path / "three"), sets=["toy"], coarse=["perturbed", "truth"],
                                         methods=["coarse"], seed=5, draws=3, figure_rows=0, threads=1),
                          datasets={"toy": items})["sets"]["toy"]
    iou, biou, mba = _direct(items, lambda image, c: c, seed=5, draws=3)
    s = three["perturbed"]["scores"]["coarse"]
    assert (s["iou"], s["boundary_iou"], s["mba"]) == pytest.approx((iou, biou, mba), abs=1e-12)
    assert s["objects"] == 2 and three["perturbed"]["objects"] == 2 and three["perturbed"]["draws"] == 3
    rows = three["perturbed"]["per_object"]
    assert [(o["name"], o["draw"]) for o in rows] == [("rect", 0), ("rect", 1), ("rect", 2),
                                                       ("disc", 0), ("disc", 1), ("disc", 2)]
    assert [o["coarse"] for o in rows if o["draw"] == 0] == [o["coarse"] for o in one["perturbed"]["per_object"]]
    # the truth does not depend on the seed: one row per object, whatever draws says
    assert three["truth"]["draws"] == 1 and len(three["truth"]["per_object"]) == 2
    # the share of the photo the coarse mask covers: the rectangle's 18 x 24 of 40 x 48, the disc's own area
    covers = [o["coarse_cover"] for o in three["truth"]["per_object"]]
    assert covers == pytest.approx([18 * 24 / (40 * 48), int(items[1]["mask"].sum()) / (36 * 44)], abs=1e-7)
    assert "2 objects, 3 draws each" in (tmp_path / "three" / "zero_shot.md").read_text()


def _row(index, draw, spn, peer):
    """A per-object row whose methods have (intersection, union, mBA) ``spn`` and ``peer``."""
    return {"name": str(index), "index": index, "draw": draw,
            "spn": {"intersection": spn[0], "union": spn[1], "mba": spn[2]},
            "coarse": {"intersection": peer[0], "union": peer[1], "mba": peer[2]}}


def test_paired_intervals_against_hand_counted_bootstrap_distributions():
    # two objects, one draw each, mBA differences +0.2 and -0.2: a resample holds a twice (1/4,
    # mean +0.2), a and b (1/2, 0) or b twice (1/4, -0.2); the 2.5 % and 97.5 % quantiles of
    # that distribution are -0.2 and +0.2, and the observed difference is 0
    rows = [_row(0, 0, (5, 10, 0.7), (5, 10, 0.5)), _row(1, 0, (5, 10, 0.5), (5, 10, 0.7))]
    d, lo, hi = paired_intervals(rows, "spn", ["coarse"], keys=("mba",), boot=4000, seed=1)["coarse"]["mba"]
    assert d == pytest.approx(0.0, abs=1e-12)
    assert (lo, hi) == pytest.approx((-0.2, 0.2), abs=1e-9)
    # IoU: summed intersections over summed unions, per method: (9 + 1) / (10 + 10) - (8 + 2) / (10 + 10) = 0
    rows = [_row(0, 0, (9, 10, 0.5), (8, 10, 0.5)), _row(1, 0, (1, 10, 0.5), (2, 10, 0.5))]
    d, lo, hi = paired_intervals(rows, "spn", ["coarse"], keys=("iou",), boot=4000, seed=1)["coarse"]["iou"]
    assert d == pytest.approx(0.0, abs=1e-12)
    assert (lo, hi) == pytest.approx((-0.1, 0.1), abs=1e-9)
    # one object, two draws (+0.1 and +0.3 in mBA): only the draws vary; the interval spans them
    rows = [_row(0, 0, (5, 10, 0.6), (5, 10, 0.5)), _row(0, 1, (5, 10, 0.8), (5, 10, 0.5))]
    d, lo, hi = paired_intervals(rows, "spn", ["coarse"], keys=("mba",), boot=4000, seed=1)["coarse"]["mba"]
    assert d == pytest.approx(0.2) and (lo, hi) == pytest.approx((0.1, 0.3), abs=1e-9)
    # every resample of a constant difference is that difference
    rows = [_row(0, 0, (9, 10, 0.8), (8, 10, 0.7)), _row(1, 0, (9, 10, 0.8), (8, 10, 0.7))]
    out = paired_intervals(rows, "spn", ["coarse"], boot=50)["coarse"]
    assert out["iou"] == pytest.approx((0.1, 0.1, 0.1)) and out["mba"] == pytest.approx((0.1, 0.1, 0.1))
    # one row: a difference, and no interval
    d, lo, hi = paired_intervals(rows[:1], "spn", ["coarse"], keys=("iou",))["coarse"]["iou"]
    assert d == pytest.approx(0.1) and np.isnan(lo) and np.isnan(hi)


def test_pooled_tables_sum_every_sets_objects(tmp_path):
    items = _items()
    cfg = ZeroShotConfig(out=str(tmp_path), sets=["a", "b"], coarse=["perturbed"], methods=["coarse", "guided_filter"],
                         draws=2, figure_rows=0, threads=1)
    res = run_zero_shot(cfg, datasets={"a": items[:1], "b": items[1:]})
    rows = res["sets"]["a"]["perturbed"]["per_object"] + res["sets"]["b"]["perturbed"]["per_object"]
    assert len(rows) == 4  # two objects, two draws each
    pooled = res["pooled"]["perturbed"]
    assert pooled["sets"] == ["a", "b"] and pooled["objects"] == 2 and pooled["draws"] == 2
    for m in ("coarse", "guided_filter"):
        inter = sum(o[m]["intersection"] for o in rows)
        union = sum(o[m]["union"] for o in rows)
        assert pooled["scores"][m]["iou"] == pytest.approx(inter / union, abs=1e-12)
        assert pooled["scores"][m]["mba"] == pytest.approx(np.mean([o[m]["mba"] for o in rows]), abs=1e-12)
    assert "intervals" not in pooled  # no SPN among the methods
    assert "**all sets pooled (a, b), coarse perturbed** (2 objects, 2 draws each)" in (tmp_path / "zero_shot.md").read_text()
    json.loads((tmp_path / "zero_shot.json").read_text())  # the pooled results are stored too
