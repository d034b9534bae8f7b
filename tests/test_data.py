"""Readers, the torch-style resize, the shipped copies and the TFDS builders."""

import gzip
import hashlib
import shutil

import numpy as np
import pytest

from lecun_jax import data
from lecun_jax.data import sources

# From ../shared/data/README.md (independent of this package).
USPS_MD5 = {"zip.train.gz": "c34cea394b11a40959714d43488f4c93", "zip.test.gz": "dcd52277c5465428eb15ad72af9ef5c3"}
USPS_CLASS_COUNTS = {
    "train": [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644],
    "test": [359, 264, 198, 166, 200, 160, 170, 147, 166, 177],
}


def _torch_bilinear_pixel(img, oy, ox, n_in=28, n_out=16):
    """One output pixel of F.interpolate(mode='bilinear', align_corners=False), from the formula."""
    def src(d):
        return max((d + 0.5) * n_in / n_out - 0.5, 0.0)

    y, x = src(oy), src(ox)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, n_in - 1), min(x0 + 1, n_in - 1)
    ly, lx = y - y0, x - x0
    top = (1 - lx) * float(img[y0, x0]) + lx * float(img[y0, x1])
    bottom = (1 - lx) * float(img[y1, x0]) + lx * float(img[y1, x1])
    return (1 - ly) * top + ly * bottom


def test_resize_of_a_ramp_is_the_ramp_at_the_source_coordinates():
    # Bilinear interpolation reproduces a linear function exactly; torch's
    # align_corners=False maps output d to source 1.75 d + 0.375 at 28 -> 16.
    yy, xx = np.mgrid[0:28, 0:28]
    ramp = (4 * yy + 5 * xx).astype(np.uint8)[None]
    out = data.resize_mnist(ramp)[0, ..., 0]
    s = 1.75 * np.arange(16) + 0.375
    expected = (4 * s[:, None] + 5 * s[None, :]) / 127.5 - 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_resize_matches_the_bilinear_formula_pixel_by_pixel():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    out = data.resize_mnist(images)
    for n in range(3):
        for oy in range(16):
            for ox in range(16):
                expected = _torch_bilinear_pixel(images[n], oy, ox) / 127.5 - 1
                assert abs(out[n, oy, ox, 0] - expected) < 1e-6


def test_resize_matches_torch_when_installed(shared_data):
    torch = pytest.importorskip("torch", reason="torch not installed: the formula tests above stand in for it")
    images, _ = data.read_mnist(shared_data / "mnist", "test")
    x = torch.from_numpy(images[:500].astype(np.float32)) / 127.5 - 1.0  # Karpathy's order: scale, then resize
    theirs = torch.nn.functional.interpolate(x[:, None], (16, 16), mode="bilinear").numpy()[:, 0]
    np.testing.assert_allclose(data.resize_mnist(images[:500])[..., 0], theirs, atol=2.5e-7, rtol=0)


def test_shipped_files_match_their_checksums():
    m = data.manifest()
    for rel, info in m["files"].items():
        path = data.shipped_file(rel)  # raises on a mismatch
        assert data.sha256(path) == info["sha256"]
    for name, md5 in USPS_MD5.items():  # the shipped USPS files are the official ones, byte for byte
        assert hashlib.md5((data.SHIPPED_DIR / "usps" / name).read_bytes()).hexdigest() == md5


def test_a_corrupted_shipped_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "shipped"
    shutil.copytree(data.SHIPPED_DIR, copy)
    blob = bytearray((copy / "mnist1989.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "mnist1989.npz").write_bytes(bytes(blob))
    monkeypatch.setattr(sources, "SHIPPED_DIR", copy)
    with pytest.raises(data.DataError, match=r"mnist1989\.npz: SHA-256 .* does not match"):
        data.mnist1989_source()


def test_usps_reader_against_the_shared_files(shared_data):
    for split, n in data.SPLIT_SIZES.items():
        images, labels = data.read_esl(shared_data / "usps" / data.USPS_FILES[split])
        assert images.shape == (n, 16, 16, 1) and images.dtype == np.float32
        assert np.bincount(labels, minlength=10).tolist() == USPS_CLASS_COUNTS[split]
        assert images.min() == -1.0 and images.max() == 1.0
    # The first training line begins "6.0000 -1.0000 ... -0.6310 0.8620 -0.1670".
    line = gzip.open(shared_data / "usps" / "zip.train.gz", "rt").readline().split()
    images, labels = data.read_esl(shared_data / "usps" / "zip.train.gz")
    assert labels[0] == 6 and line[0] == "6.0000"
    first = images[0].reshape(-1)
    np.testing.assert_array_equal(first, np.asarray(line[1:], dtype=np.float32))
    assert first[:10].tolist() == pytest.approx([-1] * 7 + [-0.631, 0.862, -0.167])


def test_mnist_reader_against_the_shared_files(shared_data):
    images, labels = data.read_mnist(shared_data / "mnist", "train")
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert labels[0] == 5 and int(images[0].sum()) == 27_525  # the data README's sanity figure
    images, labels = data.read_mnist(shared_data / "mnist", "test")
    assert images.shape == (10_000, 28, 28) and set(np.unique(labels)) == set(range(10))


def test_mnist1989_draw_is_recorded_and_reproducible(shared_data):
    idx = data.draw_mnist1989_indices(data.MNIST1989_SEED)
    shipped = data.mnist1989_source()
    for split, n in data.SPLIT_SIZES.items():
        images, labels, index = shipped[split]
        assert len(np.unique(index)) == n and index.max() < 10_000  # without replacement, from the first 10,000
        np.testing.assert_array_equal(index, idx[split])
        official_images, official_labels = data.read_mnist(shared_data / "mnist", split)
        np.testing.assert_array_equal(images, official_images[index])  # the exact source pixels
        np.testing.assert_array_equal(labels, official_labels[index])


def test_loaded_datasets_have_the_1989_shape(mnist1989, usps):
    for ds in (mnist1989, usps):
        for split, n in data.SPLIT_SIZES.items():
            s = ds.split(split)
            assert s.images.shape == (n, 16, 16, 1) and s.images.dtype == np.float32
            assert s.labels.shape == (n,) and s.labels.dtype == np.int32
            assert s.images.min() >= -1.0 and s.images.max() <= 1.0
            assert set(np.unique(s.labels)) == set(range(10))
    # the background is -1: most pixels of a digit are background
    assert np.mean(mnist1989.train.images == -1.0) > 0.4
    assert np.mean(usps.train.images == -1.0) > 0.3


def test_loaded_usps_equals_the_official_files(usps, shared_data):
    for split, name in data.USPS_FILES.items():
        images, labels = data.read_esl(shared_data / "usps" / name)
        np.testing.assert_array_equal(usps.split(split).images, images)
        np.testing.assert_array_equal(usps.split(split).labels, labels)


def test_builder_from_the_official_mnist_files_equals_the_shipped_copy(mnist1989, shared_data, tfds_dir):
    from_dir = data.load("mnist1989", source_dir=shared_data / "mnist", data_dir=tfds_dir)
    for split in data.SPLIT_SIZES:
        np.testing.assert_array_equal(from_dir.split(split).images, mnist1989.split(split).images)
        np.testing.assert_array_equal(from_dir.split(split).labels, mnist1989.split(split).labels)


def test_tfds_data_source_directly(usps, tfds_dir):
    import tensorflow_datasets as tfds

    import lecun_jax  # noqa: F401  (registers the builders)

    ds = tfds.data_source("usps", data_dir=tfds_dir, builder_kwargs={"file_format": "array_record"})
    assert len(ds["train"]) == 7291 and len(ds["test"]) == 2007
    example = ds["test"][5]
    np.testing.assert_array_equal(example["image"], usps.test.images[5])
    assert example["label"] == usps.test.labels[5] and example["index"] == 5


def _gz(path, payload: bytes):
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


def test_readers_refuse_malformed_files(tmp_path):
    with pytest.raises(data.DataError, match="file not found"):
        data.read_idx(tmp_path / "absent.gz", ndim=1)
    good = _gz(tmp_path / "labels.gz", (0x801).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    assert data.read_idx(good, ndim=1).tolist() == [1, 2, 3]
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(good.read_bytes()[:-6])
    with pytest.raises(data.DataError, match="truncated.gz: not a complete gzip file"):
        data.read_idx(truncated, ndim=1)
    wrong_magic = _gz(tmp_path / "magic.gz", (0x803).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(data.DataError, match="magic number 0x00000803 where 0x00000801"):
        data.read_idx(wrong_magic, ndim=1)
    short = _gz(tmp_path / "short.gz", (0x801).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(3))
    with pytest.raises(data.DataError, match=r"header says \(5,\)"):
        data.read_idx(short, ndim=1)
    esl = _gz(tmp_path / "zip.train.gz", b"3.0000 " + b"-1.0000 " * 255 + b"\n")
    with pytest.raises(data.DataError, match="line 1: 256 values where 257"):
        data.read_esl(esl)
    esl = _gz(tmp_path / "zip.train.gz", b"12.0000 " + b"-1.0000 " * 256 + b"\n")
    with pytest.raises(data.DataError, match="label 12 .* outside 0-9"):
        data.read_esl(esl)
    esl = _gz(tmp_path / "zip.train.gz", b"3.0000 " + b"-1.0000 " * 256 + b"\n" + b"nan " + b"-1.0000 " * 256 + b"\n")
    with pytest.raises(data.DataError, match=r"zip.train.gz, line 2: the label is 'nan', not a finite number"):
        data.read_esl(esl)
    esl = _gz(tmp_path / "zip.train.gz", b"\n3.0000 " + b"-1.0000 " * 255 + b"-inf\n")
    with pytest.raises(data.DataError, match=r"zip.train.gz, line 2: a grey value is '-inf', not a finite number"):
        data.read_esl(esl)
    (tmp_path / "folder.gz").mkdir()
    with pytest.raises(data.DataError, match=r"folder.gz: a directory where a data file was expected"):
        data.read_idx(tmp_path / "folder.gz", ndim=1)
    html = tmp_path / "page.gz"
    html.write_text("<html>404</html>")
    with pytest.raises(data.DataError, match=r"page.gz: not a complete gzip file"):
        data.read_idx(html, ndim=1)
