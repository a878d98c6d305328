"""Every stage sees the same pixels: EXIF orientation applied, 16-bit scaled, alpha over
white, symlinked folders followed, and an image file replaced after `pairs` refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from PIL import Image
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import GenRequest, load_image
from evoq_data.generation.prompts import compare_prompt, score_prompt
from evoq_data.images.decode import decode, model_view_bytes, needs_normalising
from evoq_data.images.pool import load_pool

runner = CliRunner()


def _upright_pattern() -> np.ndarray:
    """A 40 x 64 (h x w) image that looks different in every orientation."""
    arr = np.zeros((40, 64, 3), dtype=np.uint8)
    arr[:, :32] = (220, 30, 30)   # left half red
    arr[:, 32:] = (30, 30, 220)   # right half blue
    arr[:8, :] = (30, 200, 30)    # a green band at the top
    return arr


def _save_rotated_with_orientation_6(path, fmt="PNG"):
    """Store the pattern as a camera would: pixels rotated 90 degrees counter-clockwise, with
    EXIF orientation 6 ("rotate 90 CW to display"), so a viewer shows the upright pattern."""
    stored = np.rot90(_upright_pattern(), k=1)  # counter-clockwise: 64 x 40
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(path, format=fmt, exif=exif.tobytes(),
                                                       **({"quality": 95} if fmt == "JPEG" else {}))
    return path


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied_everywhere(tmp_path, fmt):
    path = _save_rotated_with_orientation_6(tmp_path / f"phone.{fmt.lower()}", fmt)
    expected = _upright_pattern()
    got = np.asarray(decode(path))
    assert got.shape == expected.shape  # 40 x 64 upright, not the stored 64 x 40
    err = np.abs(got.astype(int) - expected)
    if fmt == "PNG":
        assert err.max() == 0
    else:  # lossy: small errors, larger only at colour edges (chroma subsampling)
        assert err.mean() < 4 and np.median(err) <= 2
    # the judge's loader, the pool check and the published bytes agree with it
    assert np.array_equal(np.asarray(load_image(str(path))), got)
    make_images(tmp_path / "pool", 1)
    os.replace(path, tmp_path / "pool" / path.name)
    images, _ = load_pool(tmp_path / "pool", quiet=True)
    assert (64, 40) in {(im.width, im.height) for im in images}
    data, mime = model_view_bytes(tmp_path / "pool" / path.name)
    assert mime == "image/png" and np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(data))), got)
    assert needs_normalising((tmp_path / "pool" / path.name).read_bytes()) == "EXIF orientation 6"


def test_piqe_judges_the_upright_image(tmp_path):
    pytest.importorskip("pypiqe")
    from pypiqe import piqe

    from evoq_data.generation.engines.piqe import PiqeEngine

    path = _save_rotated_with_orientation_6(tmp_path / "phone.png")
    upright = _upright_pattern()
    expected = float(piqe(np.ascontiguousarray(upright[:, :, ::-1]))[0])
    assert PiqeEngine().piqe(str(path)) == pytest.approx(expected)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    got = np.asarray(decode(path))
    expected = np.clip(np.rint(ramp / 257.0), 0, 255).astype(np.uint8)
    assert np.array_equal(got[:, :, 0], expected) and np.array_equal(got[:, :, 2], expected)
    assert (got == 255).mean() < 0.01  # PIL's convert("RGB") made ~98% white


def test_alpha_is_composited_over_white_and_cmyk_becomes_rgb(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4] = (10, 20, 30, 255)  # opaque top half, fully transparent (black) bottom half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = np.asarray(decode(tmp_path / "a.png"))
    assert (got[:4] == (10, 20, 30)).all() and (got[4:] == 255).all()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert np.asarray(decode(tmp_path / "c.jpg")).shape == (8, 8, 3)


def test_max_pixels_above_pils_own_limit_takes_effect(tmp_path):
    big = tmp_path / "big.png"
    Image.new("1", (9600, 9600)).save(big)  # 92 MP: above PIL's 89.5 MP bomb warning
    assert decode(big, max_pixels=100_000_000).size == (9600, 9600)
    with pytest.raises(ValueError, match="exceeds the limit of 50000000"):
        decode(big, max_pixels=50_000_000)


def test_skip_reasons_name_no_python_objects(tmp_path):
    make_images(tmp_path / "pool", 2)
    (tmp_path / "pool" / "junk.png").write_bytes(b"not an image at all")
    _, report = load_pool(tmp_path / "pool", quiet=True)
    (skip,) = report.skipped
    assert skip["path"].endswith("junk.png") and "BytesIO" not in skip["reason"]
    assert skip["reason"].startswith("unreadable")


def test_symlinked_folders_are_followed_and_loops_skipped(tmp_path):
    make_images(tmp_path / "elsewhere", 3, seed=1)
    make_images(tmp_path / "pool" / "own", 2, seed=2)
    (tmp_path / "pool" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "pool" / "own" / "loop").symlink_to(tmp_path / "pool", target_is_directory=True)
    images, report = load_pool(tmp_path / "pool", quiet=True)
    assert len(images) == 5 and report.files_seen == 5
    assert report.symlinked_folders == 1 and report.symlink_loops_skipped == 1


def test_an_image_replaced_after_pairs_is_refused(tmp_path):
    pytest.importorskip("pypiqe")
    files = make_images(tmp_path / "pool", 3)
    pairs = tmp_path / "pairs.parquet"
    res = runner.invoke(app, ["pairs", "--images", str(tmp_path / "pool"), "--num-pairs", "3",
                              "--out", str(pairs), "--quiet"])
    assert res.exit_code == 0, res.output
    make_images(tmp_path / "other", 1, seed=99)
    os.replace(next((tmp_path / "other").iterdir()), files[0])  # same name, other picture
    res = runner.invoke(app, ["vote", "--pairs", str(pairs), "--engine", "piqe", "-k", "2",
                              "--out", str(tmp_path / "votes"), "--quiet"])
    assert_user_error(res, f"image {files[0]} changed after its id was taken")
    with pytest.raises(EvoqError, match="changed after its id was taken"):
        GenRequest(images=(str(files[0]),), prompt=score_prompt(), n=1, seed=0,
                   image_ids=("0" * 64,)).load_images()


def test_judge_and_published_dataset_show_the_same_pixels(tmp_path):
    """EXIF-rotated, 16-bit, CMYK and symlinked images: what `datasets` shows after a push is
    exactly what the judge was given, and the published folder names no local path."""
    pytest.importorskip("pypiqe")
    import datasets

    pool = tmp_path / "pool"
    make_images(pool / "plain", 2, seed=4)
    _save_rotated_with_orientation_6(pool / "phone.jpg", "JPEG")
    Image.fromarray(np.linspace(0, 65535, 48 * 40).reshape(40, 48).astype(np.uint16)).save(
        pool / "deep.png")
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).convert("CMYK").save(pool / "print.jpg")
    make_images(tmp_path / "linked", 1, seed=8)
    (pool / "linked").symlink_to(tmp_path / "linked", target_is_directory=True)
    cmds = [["pairs", "--images", str(pool), "--num-pairs", "15", "--out", str(tmp_path / "p.parquet")],
            ["vote", "--pairs", str(tmp_path / "p.parquet"), "--engine", "piqe", "-k", "2",
             "--out", str(tmp_path / "votes")],
            ["aggregate", "--votes", str(tmp_path / "votes"), "--out", str(tmp_path / "prefs")],
            ["push", "--prefs", str(tmp_path / "prefs"), "--repo-id", "me/pixels",
             "--version", "v1", "--local-dir", str(tmp_path / "ds")]]
    for cmd in cmds:
        res = runner.invoke(app, [*cmd, "--quiet"])
        assert res.exit_code == 0, (cmd[0], res.output)
    ds = datasets.load_dataset(str(tmp_path / "ds"), "preferences", split="train")
    assert len(ds) == 15  # 6 images: all pairs, the symlinked one included
    import pyarrow.parquet as pq

    paths = {}
    for r in pq.read_table(tmp_path / "p.parquet").to_pylist():
        paths[r["image_a_id"]], paths[r["image_b_id"]] = r["image_a_path"], r["image_b_path"]
    for row in ds:
        for side in "ab":
            judged = np.asarray(load_image(paths[row[f"image_{side}_id"]]))
            shown = np.asarray(row[f"image_{side}"].convert("RGB"))
            assert np.array_equal(judged, shown), row[f"image_{side}_id"]
    for f in (tmp_path / "ds").rglob("*"):
        if f.is_file():
            assert str(tmp_path).encode() not in f.read_bytes(), f


def test_decoded_images_read_each_file_once_check_its_id_and_stay_in_budget(tmp_path,
                                                                           monkeypatch):
    """The vllm engine's per-pair image cache: the pixels load_image gives, one read per
    (path, id) while it fits, the id checked on that read, the oldest dropped past the
    byte budget."""
    import hashlib

    from evoq_data.generation import engines

    files = [str(p) for p in make_images(tmp_path / "pool", 3)]
    ids = tuple(hashlib.sha256(open(p, "rb").read()).hexdigest() for p in files)
    reads = []
    real = engines.read_image_bytes
    monkeypatch.setattr(engines, "read_image_bytes",
                        lambda p, i=None: reads.append(p) or real(p, i))
    sizes = [engines.load_image(p).width * engines.load_image(p).height * 4 for p in files]
    cache = engines.DecodedImages(max_bytes=max(sizes[0] + sizes[2], sizes[1] + sizes[2]))
    reads.clear()
    pair = GenRequest(images=(files[0], files[1]), prompt=compare_prompt(), n=1, seed=0,
                      image_ids=ids[:2])
    swapped = GenRequest(images=(files[1], files[0]), prompt=compare_prompt(), n=1, seed=1,
                         image_ids=(ids[1], ids[0]))
    first, again = cache.load(pair), cache.load(swapped)
    assert reads == files[:2]  # the swapped order read nothing again
    assert again == [first[1], first[0]]
    assert all(np.array_equal(np.asarray(im), np.asarray(load_image(p)))
               for im, p in zip(first, files[:2], strict=True))
    cache.load(GenRequest(images=(files[2],), prompt=score_prompt(), n=1, seed=0,
                          image_ids=ids[2:]))
    reads.clear()
    cache.load(pair)  # the third image pushed out the least recently used: files[1]
    assert reads == [files[1]]
    with pytest.raises(EvoqError, match="changed after its id was taken"):
        cache.load(GenRequest(images=(files[2],), prompt=score_prompt(), n=1, seed=0,
                              image_ids=("0" * 64,)))
