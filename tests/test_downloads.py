"""MNIST downloads (data.name=mnist): cached per URL, checked before they are cached, and
the test split taken from the same source as the training split. A local HTTP server
on 127.0.0.1 serves small synthetic IDX sets at several URLs."""

import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

from lecun_jax import data
from lecun_jax.data import downloads, sources
from test_faults import launch, one_error_line


def write_idx_set(folder, n_train, n_test, seed):
    """Synthetic MNIST in the official file format: ``n_train`` / ``n_test`` random 28x28 digits."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        image_file, label_file = data.MNIST_FILES[split]
        with gzip.open(folder / image_file, "wb") as f:
            f.write((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes())
        with gzip.open(folder / label_file, "wb") as f:
            f.write((0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes())
        out[split] = (images, labels)
    return out


def write_html_pages(folder):
    """What a broken mirror serves under every name: a 200 OK error page."""
    folder.mkdir(parents=True, exist_ok=True)
    for pair in data.MNIST_FILES.values():
        for name in pair:
            (folder / name).write_text("<!DOCTYPE html><html><body>Service Unavailable</body></html>\n")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """(root folder served, base URL): URL a/ serves 50 + 20 digits, b/ 80 + 30, broken/ HTML pages."""
    root = tmp_path_factory.mktemp("mirror")
    sets = {"a": write_idx_set(root / "a", 50, 20, 1), "b": write_idx_set(root / "b", 80, 30, 2)}
    write_html_pages(root / "broken")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/", sets
    server.shutdown()
    server.server_close()


def _cached(tfds):
    return sorted(p.relative_to(tfds / "downloads" / "mnist16").as_posix()
                  for p in (tfds / "downloads" / "mnist16").rglob("*") if p.is_file())


def test_two_urls_never_share_a_download(mirror, tmp_path):
    root, base, sets = mirror
    a = data.load("mnist", mnist_url=base + "a/", data_dir=tmp_path)
    b = data.load("mnist", mnist_url=base + "b", data_dir=tmp_path)  # no trailing slash: the same folder URL
    for ds, name in ((a, "a"), (b, "b")):
        for split in ("train", "test"):
            images, labels = sets[name][split]
            np.testing.assert_array_equal(ds.split(split).images, data.resize_mnist(images))
            np.testing.assert_array_equal(ds.split(split).labels, labels)
        assert ds.source["kind"] == "url" and ds.source["url"] == f"{base}{name}/"
    assert (len(a.train), len(a.test), len(b.train), len(b.test)) == (50, 20, 80, 30)
    folders = {p.split("/")[0] for p in _cached(tmp_path)}
    assert folders == {downloads.url_key(base + "a/"), downloads.url_key(base + "b/")}


def test_an_html_page_is_never_cached_and_a_fixed_mirror_works(mirror, tmp_path):
    root, base, _ = mirror
    url = base + "broken/"
    with pytest.raises(data.DataError) as e:
        data.load("mnist", mnist_url=url, data_dir=tmp_path)
    message = str(e.value)
    assert message.startswith(f"{url}train-images-idx3-ubyte.gz: the download is not the MNIST file train-images-idx3-ubyte.gz: "
                              "not a complete gzip file")
    assert message.endswith("deleted, not cached") and "\n" not in message
    assert _cached(tmp_path) == []  # neither the page nor a .part file
    fixed = write_idx_set(root / "fixed", 40, 10, 3)
    (root / "broken").rename(root / "broken_was")
    (root / "fixed").rename(root / "broken")  # the mirror is repaired, same URL
    try:
        ds = data.load("mnist", mnist_url=url, data_dir=tmp_path)
    finally:
        (root / "broken").rename(root / "fixed")
        (root / "broken_was").rename(root / "broken")
    assert (len(ds.train), len(ds.test)) == (40, 10)
    np.testing.assert_array_equal(ds.train.labels, fixed["train"][1])


def test_downloads_from_a_listed_url_are_checked_against_its_checksums(mirror, tmp_path, monkeypatch):
    root, base, _ = mirror
    published = {name: ((root / "a" / name).stat().st_size, sources.sha256(root / "a" / name))
                 for pair in data.MNIST_FILES.values() for name in pair}
    monkeypatch.setitem(downloads.PUBLISHED_CHECKSUMS, base + "b/", published)  # b/ now "should" serve a/'s files
    with pytest.raises(data.DataError, match=r"b/t(rain|10k)-.*: the download is not the MNIST file .*SHA-256 .* where the "
                                             r"published MNIST file has .* bytes, SHA-256 "):
        data.load("mnist", mnist_url=base + "b/", data_dir=tmp_path)
    assert _cached(tmp_path) == []
    monkeypatch.setitem(downloads.PUBLISHED_CHECKSUMS, base + "a/", published)
    assert len(data.load("mnist", mnist_url=base + "a/", data_dir=tmp_path).train) == 50


def test_the_published_checksums_are_the_official_files(shared_data):
    """The table's test files against the reference copies (whose md5 are LeCun's published ones)."""
    table = downloads.PUBLISHED_CHECKSUMS[sources.MNIST_URL]
    md5 = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3", "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
    for name, digest in md5.items():
        path = shared_data / "mnist" / name
        assert hashlib.md5(path.read_bytes()).hexdigest() == digest
        assert table[name] == (path.stat().st_size, sources.sha256(path))
    assert set(table) == {n for pair in data.MNIST_FILES.values() for n in pair}


@pytest.mark.slow
def test_mnist_is_tested_on_its_own_sources_test_digits(mirror, shared_data, mnist1989, tmp_path):
    root, _, sets = mirror
    other = data.load("mnist", source_dir=root / "a", data_dir=tmp_path)  # some other digits in MNIST's format
    np.testing.assert_array_equal(other.test.images, data.resize_mnist(sets["a"]["test"][0]))  # its own, all 20
    official = data.load("mnist", source_dir=shared_data / "mnist", data_dir=tmp_path)
    assert len(official.train) == 10_000
    np.testing.assert_array_equal(official.test.images, mnist1989.test.images)  # the official files: mnist1989's 2,007
    np.testing.assert_array_equal(official.test.labels, mnist1989.test.labels)


@pytest.mark.slow
def test_runs_on_two_urls_train_on_their_own_digits_and_a_broken_one_is_one_line(mirror, tmp_path):
    root, base, _ = mirror
    common = ["--config.data.name=mnist", f"--config.data.tfds_dir={tmp_path / 'tfds'}", "--config.train.passes=1"]
    for name, sizes in (("a", "50 train / 20 test digits"), ("b", "80 train / 30 test digits")):
        result = launch(*common, f"--config.data.mnist_url={base}{name}/", f"--workdir={tmp_path / name}")
        assert result.returncode == 0, result.stderr
        assert f"mnist: {sizes}" in result.stdout
    broken = launch(*common, f"--config.data.mnist_url={base}broken/", f"--workdir={tmp_path / 'broken'}")
    assert broken.returncode == 1
    assert one_error_line(broken).startswith(f"error: {base}broken/train-images-idx3-ubyte.gz: the download is not the MNIST file")
    assert not (tmp_path / "broken" / "metrics.jsonl").exists()
