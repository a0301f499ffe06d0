"""``spn refine`` and ``spn eval`` end to end through ``spn.cli.main`` on tiny checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from spn.cli import main

K = 6  # the synthetic dataset's classes
H = W = 64


def _train_steps(model, steps=2, seed=0):
    """A couple of real optimizer steps on random data (the checkpoint is then not the init)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        img = torch.rand(2, 3, 32, 32, generator=g)
        mask = torch.randint(0, K, (2, 32, 32), generator=g)
        coarse = torch.softmax(torch.randn(2, K, 32, 32, generator=g), 1)
        loss = torch.nn.functional.cross_entropy(model(img, coarse), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return opt


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from spn.data import build_dataset
    from spn.models.checkpoint import save_checkpoint
    from spn.models import create_model

    root = tmp_path_factory.mktemp("runs")
    ds = build_dataset("synthetic", split="val", num_images=3, size=H)
    info = {"num_classes": ds.num_classes, "class_names": ds.class_names}
    out = {}
    torch.manual_seed(0)
    for name, kw in (("spn_three_way", dict(channels=4, guidance_width=4, guidance_depth=2)),
                     ("baseline", dict(width=4, depth=2))):
        m = create_model(name, num_classes=K, **kw)
        opt = _train_steps(m)
        save_checkpoint(root / name, m, {"steps": 2}, 2, optimizer=opt, data_info=info)
        out[name] = root / name
    # inputs: images + coarse maps (label PNG at 1/8, npy scores at 1/4)
    from spn.data import write_image
    from spn.data import write_mask

    imgs, co = root / "images", root / "coarse"
    imgs.mkdir()
    co.mkdir()
    for i in range(3):
        it = ds[i]
        write_image(imgs / f"im{i}.png", it["image"])
        if i == 0:
            write_mask(co / f"im{i}.png", it["coarse"].argmax(0)[::8, ::8])
        else:
            np.save(co / f"im{i}.npy", it["coarse"][:, ::4, ::4].numpy())
    out["images"], out["coarse"], out["dataset"] = imgs, co, ds
    return out


def _labels(path):
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.asarray(im).astype(np.int64)


def test_refine_single_image(runs, tmp_path, capsys):
    out, ov = tmp_path / "r.png", tmp_path / "o.png"
    rc = main(["refine", "--checkpoint", str(runs["spn_three_way"]), "--image", str(runs["images"] / "im1.png"),
               "--coarse", str(runs["coarse"] / "im1.npy"), "--out", str(out), "--overlay", str(ov)])
    assert rc == 0
    lab = _labels(out)
    assert lab.shape == (H, W) and lab.max() < K
    # a briefly trained refiner with a residual path mostly keeps the coarse decision
    coarse_lab = runs["dataset"][1]["coarse"].argmax(0).numpy()
    assert (lab == coarse_lab).mean() > 0.5
    with Image.open(ov) as im:
        assert im.mode == "RGB" and im.size == (W, H)
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png", "r.png"]  # no temp files left


def test_refine_folder_with_progress(runs, tmp_path):
    out, ov = tmp_path / "out", tmp_path / "ov"
    rc = main(["refine", "--checkpoint", str(runs["spn_three_way"]), "--image", str(runs["images"]),
               "--coarse", str(runs["coarse"]), "--out", str(out), "--overlay", str(ov), "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png", "im2.png"]
    assert sorted(p.name for p in ov.iterdir()) == ["im0.png", "im1.png", "im2.png"]
    for p in out.iterdir():
        assert _labels(p).shape == (H, W)


def test_refine_baseline_needs_no_coarse(runs, tmp_path):
    out = tmp_path / "b.png"
    rc = main(["refine", "--checkpoint", str(runs["baseline"]), "--image", str(runs["images"] / "im0.png"),
               "--out", str(out)])
    assert rc == 0 and _labels(out).shape == (H, W)
    # restricted to the coarse classes: only labels present in the coarse map remain
    out2 = tmp_path / "b2.png"
    rc = main(["refine", "--checkpoint", str(runs["baseline"]), "--image", str(runs["images"] / "im2.png"),
               "--coarse", str(runs["coarse"] / "im2.npy"), "--restrict-to-present", "--out", str(out2)])
    assert rc == 0
    present = set(np.unique(np.load(runs["coarse"] / "im2.npy").argmax(0)).tolist())
    assert set(np.unique(_labels(out2)).tolist()) <= present


def _err(capsys):
    return capsys.readouterr().err


def test_refine_errors(runs, tmp_path, capsys):
    ck = str(runs["spn_three_way"])
    img = str(runs["images"] / "im1.png")
    # missing checkpoint
    assert main(["refine", "--checkpoint", str(tmp_path / "nope"), "--image", img, "--out", "x.png"]) == 1
    assert "nope" in _err(capsys)
    # missing image
    assert main(["refine", "--checkpoint", ck, "--image", str(tmp_path / "no.png"),
                 "--coarse", str(runs["coarse"] / "im1.npy"), "--out", str(tmp_path / "x.png")]) == 1
    assert "no.png does not exist" in _err(capsys)
    # SPN without coarse
    assert main(["refine", "--checkpoint", ck, "--image", img, "--out", str(tmp_path / "x.png")]) == 1
    assert "--coarse" in _err(capsys)
    # wrong class count (npy)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.random.rand(K - 1, 8, 8).astype(np.float32))
    assert main(["refine", "--checkpoint", ck, "--image", img, "--coarse", str(bad), "--out", str(tmp_path / "x.png")]) == 1
    assert f"has {K - 1} classes but checkpoint" in _err(capsys)
    # class id out of range (label png)
    from spn.data import write_mask

    badpng = tmp_path / "badlab.png"
    write_mask(badpng, torch.full((8, 8), K + 3))
    assert main(["refine", "--checkpoint", ck, "--image", img, "--coarse", str(badpng), "--out", str(tmp_path / "x.png")]) == 1
    assert f"class ids [{K + 3}]" in _err(capsys)
    # aspect ratio mismatch
    tall = tmp_path / "tall.npy"
    np.save(tall, torch.softmax(torch.randn(K, 32, 4), 0).numpy())  # valid probabilities, 8:1 instead of 1:1
    assert main(["refine", "--checkpoint", ck, "--image", img, "--coarse", str(tall), "--out", str(tmp_path / "x.png")]) == 1
    assert "aspect" in _err(capsys)
    # corrupt image
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert main(["refine", "--checkpoint", ck, "--image", str(corrupt), "--coarse", str(runs["coarse"] / "im1.npy"),
                 "--out", str(tmp_path / "x.png")]) == 1
    assert "corrupt.png" in _err(capsys)
    # folder image with file coarse; folder with a missing coarse map
    assert main(["refine", "--checkpoint", ck, "--image", str(runs["images"]), "--coarse", str(runs["coarse"] / "im1.npy"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "must be a folder" in _err(capsys)
    partial = tmp_path / "partial"
    partial.mkdir()
    np.save(partial / "im1.npy", np.load(runs["coarse"] / "im1.npy"))
    assert main(["refine", "--checkpoint", ck, "--image", str(runs["images"]), "--coarse", str(partial),
                 "--out", str(tmp_path / "o")]) == 1
    assert "no coarse map for image 'im0'" in _err(capsys)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "o").exists()
    # corrupt checkpoint weights
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs["spn_three_way"], broken)
    (broken / "checkpoints" / "step-00000002" / "model.safetensors").write_bytes(b"junk")
    assert main(["refine", "--checkpoint", str(broken), "--image", img, "--coarse", str(runs["coarse"] / "im1.npy"),
                 "--out", str(tmp_path / "x.png")]) == 1
    assert "corrupt" in _err(capsys)
    # --debug re-raises
    with pytest.raises(FileNotFoundError):
        main(["refine", "--checkpoint", str(tmp_path / "nope"), "--image", img, "--out", "x.png", "--debug"])


# --- spn eval ---------------------------------------------------------------------------------

def test_eval_end_to_end(runs, tmp_path, capsys):
    js, md = tmp_path / "m.json", tmp_path / "r.md"
    rc = main(["eval", "--checkpoint", str(runs["spn_three_way"]), "--data", "synthetic", "--split", "val",
               "--limit", "2", "--json", str(js), "--report", str(md), "--no-progress"])
    assert rc == 0
    data = json.loads(js.read_text())
    assert data["num_images"] == 2 and data["num_classes"] == K
    assert data["coarse"]["pixels"] == data["refined"]["pixels"] == 2 * 256 * 256
    assert data["model"] == "spn_three_way" and data["protocol"] == "plain"
    assert set(data["table"]) == {"coarse input", "spn_three_way"}
    text = md.read_text()
    assert "| method | overall AC | mean AC | mean IoU | boundary IoU | mBA | s/image |" in text
    assert "| coarse input |" in text and "| spn_three_way |" in text
    assert "Per-class IoU" in text and "| background |" in text
    assert text.strip() in capsys.readouterr().out


def test_eval_protocols_and_baseline_coarse(runs, tmp_path):
    js = tmp_path / "v.json"
    assert main(["eval", "--checkpoint", str(runs["spn_three_way"]), "--data", "synthetic", "--limit", "1",
                 "--protocol", "voc", "--coarse", f"baseline:{runs['baseline']}", "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert data["protocol"] == "voc" and data["coarse_source"].startswith("baseline:")
    assert data["coarse"] is not None
    # baseline on a dataset without coarse maps: no coarse row
    js2 = tmp_path / "b.json"
    assert main(["eval", "--checkpoint", str(runs["baseline"]), "--data", "synthetic", "--limit", "1",
                 "--coarse", "none", "--json", str(js2)]) == 0
    assert json.loads(js2.read_text())["coarse"] is None


def test_eval_errors(runs, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "missing"), "--data", "synthetic"]) == 1
    assert "missing" in _err(capsys)
    assert main(["eval", "--checkpoint", str(runs["spn_three_way"]), "--data", "nope:x"]) == 1
    assert "nope" in _err(capsys)
    assert main(["eval", "--checkpoint", str(runs["spn_three_way"]), "--data", "synthetic", "--limit", "0"]) == 1
    assert "--limit" in _err(capsys)
    # an SPN on data without coarse maps
    assert main(["eval", "--checkpoint", str(runs["spn_three_way"]), "--data", "synthetic", "--coarse", "none",
                 "--limit", "1"]) == 1
    assert "coarse" in _err(capsys)
    # class count mismatch: a folder dataset with 2 classes
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        Image.fromarray((np.random.rand(16, 16, 3) * 255).astype(np.uint8)).save(root / "images" / f"a{i}.png")
        Image.fromarray((np.arange(256).reshape(16, 16) % 2).astype(np.uint8), mode="L").save(root / "masks" / f"a{i}.png")
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("a0\na1\n")
    (root / "splits" / "train.txt").write_text("a0\n")
    assert main(["eval", "--checkpoint", str(runs["baseline"]), "--data", f"folder:{root}"]) == 1
    assert f"predicts {K} classes but dataset" in _err(capsys)
