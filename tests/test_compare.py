"""run_compare and `spn compare`: report, JSON, figure, timings, protocols, CLI errors."""
import json

import pytest
import torch
from PIL import Image
from torch import nn

from spn.cli import main
from spn.data import build_dataset
from spn.experiments.compare import checkpoint_args, run_compare
from spn.metrics import ConfusionMatrix

SIZE = 64


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two SPN checkpoints (one-way, three-way) trained for 2 steps on tiny synthetic scenes."""
    from spn.tasks import train
    from spn.training import TrainConfig

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for title, model in (("one-way", "spn_one_way"), ("three-way", "spn_three_way")):
        cfg = TrainConfig(data="synthetic", data_options={"num_images": 2, "size": SIZE}, model=model,
                          model_cfg={"channels": 8, "guidance_width": 4, "guidance_depth": 2},
                          patch_size=32, patches_per_image=1, batch_size=2, steps=2, seed=0,
                          out=str(root / model), ckpt_interval=2, log_interval=1, progress=False,
                          val_split=None)
        train(cfg)
        out[title] = root / model
    return out


@pytest.fixture(scope="module")
def val_set():
    return build_dataset("synthetic", split="val", num_images=3, size=SIZE)


def test_run_compare_writes_report_json_figure(runs, val_set, tmp_path):
    peers = ["bilinear", "guided_filter", "domain_transform"]
    try:
        import pydensecrf.densecrf  # noqa: F401
        peers.insert(1, "densecrf")
    except ImportError:
        pass
    res = run_compare(val_set, dict(runs), peers, tmp_path / "cmp", limit=3, figure_rows=2,
                      crf_params={"iterations": 3} if "densecrf" in peers else None,
                      time_repeats=1, time_size=48)
    titles = list(res["methods"])
    assert titles[0] == "coarse (bilinear)" and titles[-2:] == ["one-way", "three-way"]
    assert res["images"] == 3 and res["protocol"] == "plain"
    for t, r in res["methods"].items():
        m = r["metrics"]
        assert 0 <= m["pixel_accuracy"] <= 1 and m["pixels"] == 3 * SIZE * SIZE
        assert r["seconds_per_image"]["median"] > 0
        assert res["time_512"][t] > 0
    if "densecrf" in peers:
        assert res["crf_params"]["iterations"] == 3

    # the coarse row is the coarse input's own confusion matrix
    cm = ConfusionMatrix(val_set.num_classes)
    for i in range(3):
        cm.update(val_set[i]["mask"], val_set[i]["coarse"].argmax(0))
    assert res["methods"]["coarse (bilinear)"]["metrics"]["mean_iou"] == pytest.approx(cm.compute()["mean_iou"])

    md = (tmp_path / "cmp" / "compare.md").read_text()
    header = md.splitlines()[next(i for i, l in enumerate(md.splitlines()) if l.startswith("| method"))]
    assert "overall AC" in header and "mean IoU" in header and "disc (IoU)" in header and "s/image" in header
    for t in titles:
        assert f"| {t} |" in md
    assert "48 x 48" in md

    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(data["methods"]) == set(titles)
    assert data["methods"]["three-way"]["kind"] == "checkpoint"
    assert data["time_size"] == 48 and set(data["time_512"]) == set(titles)

    img = Image.open(tmp_path / "cmp" / "compare.png")
    # columns: image, coarse, one per peer except bilinear, one per checkpoint, ground truth
    n_cols = 2 + (len(peers) - 1) + 2 + 1
    assert img.width > n_cols * SIZE and img.height > 2 * SIZE
    assert res["figure"].endswith("compare.png")


class _Stubborn(nn.Module):
    """A 'model' that always scores the last class highest (absent from most coarse maps)."""

    def __init__(self, k):
        super().__init__()
        self.k = k
        self.w = nn.Parameter(torch.zeros(()))
        self.name, self.config = "stubborn", {"num_classes": k}

    def forward(self, image, coarse):
        logits = torch.log(coarse.clamp_min(1e-6)) + self.w
        logits[:, -1] += 100.0
        return logits


def test_voc_protocol_restricts_every_method(val_set, tmp_path):
    k = val_set.num_classes
    absent = [i for i in range(3) if (val_set[i]["coarse"].argmax(0) == k - 1).sum() == 0]
    assert absent, "fixture: the last class should be absent from some coarse map"
    plain = run_compare(val_set, {"stubborn": _Stubborn(k)}, [], tmp_path / "p", limit=3,
                        figure_rows=0, time_512=False)
    voc = run_compare(val_set, {"stubborn": _Stubborn(k)}, [], tmp_path / "v", limit=3,
                      protocol="voc", figure_rows=0, time_512=False)
    assert plain["methods"]["stubborn"]["metrics"]["pixel_accuracy"] < 0.5
    assert voc["methods"]["stubborn"]["metrics"]["pixel_accuracy"] > plain["methods"]["stubborn"]["metrics"]["pixel_accuracy"]
    assert "time_512" not in voc and voc["figure"] is None
    assert not (tmp_path / "v" / "compare.png").exists()
    assert "restricted" in (tmp_path / "v" / "compare.md").read_text()


def test_run_compare_bad_input(val_set, tmp_path, runs):
    with pytest.raises(ValueError, match="nothing to compare"):
        run_compare(val_set, {}, [], tmp_path)
    with pytest.raises(ValueError, match="unknown peer"):
        run_compare(val_set, {}, ["bm3d"], tmp_path)
    with pytest.raises(ValueError, match="unknown protocol"):
        run_compare(val_set, {}, ["bilinear"], tmp_path, protocol="kitti")
    with pytest.raises(ValueError, match="clashes"):
        run_compare(val_set, {"guided filter": runs["one-way"]}, ["guided_filter"], tmp_path)
    no_coarse = build_dataset("synthetic", split="val", num_images=1, size=SIZE, coarse="none")
    with pytest.raises(ValueError, match="no 'coarse' map"):
        run_compare(no_coarse, {}, ["bilinear"], tmp_path, time_512=False)
    with pytest.raises(FileNotFoundError):
        run_compare(val_set, {"x": tmp_path / "missing_run"}, [], tmp_path)
    with pytest.raises(ValueError, match="NAME=RUN"):
        checkpoint_args(["runs/one"])
    with pytest.raises(ValueError, match="twice"):
        checkpoint_args(["a=x", "a=y"])
    assert checkpoint_args(["one-way=runs/a=b"]) == {"one-way": "runs/a=b"}


def test_helen_protocol_table_columns(tmp_path):
    class Faces:
        num_classes = 11
        class_names = None
        ignore_index = 255

        def __init__(self):
            g = torch.Generator().manual_seed(0)
            mask = torch.randint(0, 11, (24, 24), generator=g)
            coarse = torch.softmax(torch.randn(11, 24, 24, generator=g) + 3 * torch.nn.functional.one_hot(
                mask, 11).permute(2, 0, 1), 0)
            self.item = {"image": torch.rand(3, 24, 24, generator=g), "mask": mask, "coarse": coarse,
                         "name": "face"}

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return self.item

    res = run_compare(Faces(), {}, ["bilinear"], tmp_path, protocol="helen", figure_rows=1, time_512=False)
    md = (tmp_path / "compare.md").read_text()
    for col in ("skin (F)", "brows (F)", "U-lip (F)", "in-mouth (F)", "overall (F)"):
        assert col in md
    assert res["methods"]["coarse (bilinear)"]["metrics"]["f_measure"]["overall"] > 0.5


def test_cli_compare(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["compare", "--data", "synthetic", "--split", "val", "--limit", "2",
               "--checkpoint", f"three-way={runs['three-way']}", "--peers", "bilinear,guided_filter",
               "--no-time-512", "--figure-rows", "1", "--out", str(out), "--threads", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| three-way |" in printed and "| guided filter |" in printed
    for f in ("compare.md", "compare.json", "compare.png"):
        assert (out / f).is_file()
    assert json.loads((out / "compare.json").read_text())["images"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "nonsense"], "NAME=RUN"),
    (["--peers", "bilinear,bm3d"], "unknown peer"),
    (["--peers", "none"], "nothing to compare"),
    (["--checkpoint", "x=/does/not/exist"], "/does/not/exist"),
    (["--crf", "sxy=3"], "--crf expects KEY=VALUE"),
    (["--crf-grid", "--peers", "bilinear"], "needs the densecrf peer"),
    (["--limit", "0"], "--limit"),
])
def test_cli_compare_errors(tmp_path, capsys, argv, message):
    rc = main(["compare", "--data", "synthetic", "--out", str(tmp_path / "o"), "--no-time-512"] + argv)
    assert rc == 1
    err = capsys.readouterr().err
    assert "spn compare: error:" in err and message in err


def test_cli_compare_wrong_class_count(runs, tmp_path, capsys):
    # a 3-class folder dataset against a 6-class checkpoint
    import numpy as np

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 100 + 40 * i, np.uint8)).save(root / "images" / f"a{i}.png")
        m = np.zeros((16, 16), np.uint8)
        m[4:10, 4:10] = 1 + i
        Image.fromarray(m, mode="L").save(root / "masks" / f"a{i}.png")
    (root / "classes.txt").write_text("bg\nx\ny\n")
    rc = main(["compare", "--data", f"folder:{root}", "--split", "train", "--coarse", "gt-downsample:4",
               "--checkpoint", f"t={runs['three-way']}", "--peers", "bilinear", "--no-time-512",
               "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "classes" in capsys.readouterr().err


def test_cli_without_pydensecrf(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    base = ["compare", "--data", "synthetic", "--limit", "1", "--no-time-512", "--figure-rows", "0"]
    # asked for explicitly: a clear error
    assert main(base + ["--peers", "bilinear,densecrf", "--out", str(tmp_path / "a")]) == 1
    assert "pip install pydensecrf2" in capsys.readouterr().err
    # the default peer list: left out with a warning, the rest runs
    assert main(base + ["--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "| guided filter |" in captured.out
    assert "dense CRF" not in captured.out
    # the library call used by `spn demo`: skip_unavailable leaves it out and says so
    from spn.data import build_dataset as bd
    ds = bd("synthetic", split="val", num_images=1, size=SIZE)
    res = run_compare(ds, {}, ["bilinear", "densecrf"], tmp_path / "c", figure_rows=0, time_512=False,
                      skip_unavailable=True)
    assert list(res["methods"]) == ["coarse (bilinear)"] and "densecrf" in res["skipped"][0]
    assert "Left out: densecrf" in (tmp_path / "c" / "compare.md").read_text()
