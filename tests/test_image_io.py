"""The one image reader (spn.image.io.read_image): every pixel type by its documented range, the
pixel limit checked on the header before decoding, and coarse .npy headers checked before
allocating. Fixtures are made here, with PIL and numpy."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from spn.data import load_coarse_array
from spn.image.io import (DEFAULT_MAX_PIXELS, CorruptFileError, ImageTooLargeError, max_pixels, read_image,
                          read_mask, read_npy)


def _rgb(t):
    return np.asarray(t).transpose(1, 2, 0)


def test_a_float32_tiff_in_0_1_is_read_as_its_values(tmp_path):
    a = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    Image.fromarray(a).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    out = read_image(tmp_path / "f.tif")
    assert out.shape == (3, 2, 2)
    for c in range(3):
        np.testing.assert_array_equal(out[c].numpy(), a)


@pytest.mark.parametrize("values, match", [
    ([[0.0, 255.0]], r"float image with values 0\.\.255; spn reads float images as \[0, 1\]"),
    ([[-0.5, 0.5]], r"values -0\.5\.\.0\.5"),
    ([[np.nan, 0.5]], "NaN or infinite"),
])
def test_a_float_image_outside_0_1_is_refused_in_one_line(tmp_path, values, match):
    Image.fromarray(np.array(values, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=match) as e:
        read_image(tmp_path / "f.tif")
    assert "f.tif" in str(e.value) and "\n" not in str(e.value)


def test_16_bit_images_are_divided_by_65535(tmp_path):
    a = np.array([[0, 65535], [32768, 1000]], np.uint16)
    for name in ("g.png", "g.tif"):
        Image.fromarray(a).save(tmp_path / name)
        out = read_image(tmp_path / name)
        np.testing.assert_allclose(out[1].numpy(), a / 65535.0, rtol=0, atol=1e-7)
        assert float(out[0, 0, 1]) == 1.0


def test_32_bit_integers_are_read_as_16_bit_and_larger_values_refused(tmp_path):
    Image.fromarray(np.array([[0, 65535]], np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert read_image(tmp_path / "i.tif")[2].tolist() == [[0.0, 1.0]]
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"32-bit integer image with values 0\.\.70000"):
        read_image(tmp_path / "big.tif")


def test_8_bit_modes_palette_grey_rgba(tmp_path):
    grey = np.array([[0, 51], [102, 255]], np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    out = read_image(tmp_path / "l.png")
    for c in range(3):
        np.testing.assert_allclose(out[c].numpy(), grey / 255.0, atol=1e-7)
    p = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    p.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    p.save(tmp_path / "p.png")
    np.testing.assert_allclose(_rgb(read_image(tmp_path / "p.png"))[0] * 255, [[10, 20, 30], [200, 100, 0]], atol=1e-4)
    rgba = np.array([[[255, 0, 0, 0], [0, 128, 255, 255]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(_rgb(read_image(tmp_path / "a.png"))[0] * 255, rgba[0, :, :3], atol=1e-4)


def test_an_unsupported_pixel_type_is_one_clear_error():
    from spn.image.io import image_from_pil

    with pytest.raises(ValueError, match="pixel type 'HSV'"):
        image_from_pil(Image.new("HSV", (2, 2)), "image x.png")


def test_the_pixel_limit_refuses_in_one_line_and_can_be_raised(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "x.png")
    monkeypatch.setenv("SPN_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError, match=r"40 x 30 = 0\.0 megapixels, above the limit .*SPN_MAX_PIXELS=1200") as e:
        read_image(tmp_path / "x.png")
    assert "\n" not in str(e.value)
    with pytest.raises(ImageTooLargeError):
        read_mask(tmp_path / "x.png")
    assert read_image(tmp_path / "x.png", max_pixels=1200).shape == (3, 30, 40)   # the argument wins
    monkeypatch.setenv("SPN_MAX_PIXELS", "2e3")
    assert read_image(tmp_path / "x.png").shape == (3, 30, 40)
    monkeypatch.setenv("SPN_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="SPN_MAX_PIXELS must be a number of pixels"):
        read_image(tmp_path / "x.png")
    monkeypatch.delenv("SPN_MAX_PIXELS")
    assert max_pixels() == DEFAULT_MAX_PIXELS == 64_000_000


def _png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` (8-bit RGB) with a few bytes of pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [12000, 20000])
def test_a_huge_png_is_refused_from_its_header(tmp_path, side):
    """12000^2 is above spn's limit, 20000^2 above PIL's own bomb limit: both one spn line."""
    f = _png_header_only(tmp_path / "huge.png", side, side)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png is .*megapixels, above the limit of 64 megapixels; "
                                                  r"raise it with SPN_MAX_PIXELS="):
        read_image(f)


def _npy_header(path, shape, dtype="<f4", data=b""):
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
        fh.write(data)
    return path


def test_a_coarse_npy_is_refused_from_its_header_before_allocating(tmp_path):
    f = _npy_header(tmp_path / "c.npy", (6, 100000, 100000))
    assert f.stat().st_size < 200
    with pytest.raises(ImageTooLargeError, match=r"coarse map .*c\.npy is 100000 x 100000 = 10000\.0 megapixels"):
        load_coarse_array(f)


def test_a_truncated_npy_or_a_lying_header_is_a_corrupt_file(tmp_path):
    f = _npy_header(tmp_path / "t.npy", (2, 10, 10), data=np.zeros(50, np.float32).tobytes())
    with pytest.raises(CorruptFileError, match=r"header claims a 2 x 10 x 10 float32 array \(800 bytes\) but the file holds 200"):
        load_coarse_array(f)
    (tmp_path / "n.npy").write_bytes(b"not numpy at all")
    with pytest.raises(CorruptFileError, match="not a .npy file"):
        read_npy(tmp_path / "n.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFileError, match="Python objects"):
        read_npy(tmp_path / "o.npy")
    good = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    np.save(tmp_path / "g.npy", good)
    np.testing.assert_array_equal(read_npy(tmp_path / "g.npy"), good)
