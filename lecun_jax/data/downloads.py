"""Fetching the official MNIST files: checked against their published sizes and
SHA-256, cached per URL.

The TFDS builder ``mnist16`` (``data.name=mnist`` without ``source_dir``) gets
its digits from :func:`mnist_source`, which downloads the four IDX files and
reads them with ``lecun_jax.data.sources``, the one module of the package it imports.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import numpy as np

from lecun_jax.data.sources import MNIST_FILES, MNIST_URL, DataError, gunzip, parse_idx, read_mnist, sha256

DOWNLOAD_TIMEOUT_S = 60

# (bytes, SHA-256) of the official MNIST files as published by TFDS
# (tensorflow_datasets/url_checksums/mnist.txt, the same mirror); their md5 are
# LeCun's published ones.
# Downloads from a base URL listed here are checked against them.
PUBLISHED_CHECKSUMS = {
    MNIST_URL: {
        "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    }
}


def base_url(url: str) -> str:
    """The folder URL the MNIST files are fetched from, with one trailing slash."""
    return url.rstrip("/") + "/"


def url_key(url: str) -> str:
    """A short name for a base URL: downloads from two URLs never share a cache folder."""
    return "url-" + hashlib.sha256(base_url(url).encode()).hexdigest()[:12]


def _check_download(path: Path, url: str, expected: tuple[int, str] | None) -> None:
    """Raises ValueError unless ``path`` is a gzipped IDX file (with the published size and SHA-256, if any)."""
    if expected is not None:
        size, digest = expected
        got_size, got = path.stat().st_size, sha256(path)
        if (got_size, got) != (size, digest):
            raise ValueError(
                f"{got_size:,} bytes, SHA-256 {got[:16]}..., where the published MNIST file has {size:,} bytes, "
                f"SHA-256 {digest[:16]}..."
            )
    name = url.rsplit("/", 1)[-1]
    parse_idx(gunzip(path.read_bytes()), 3 if "idx3" in name else 1)


def download(url: str, dest: Path, expected: tuple[int, str] | None = None) -> Path:
    """Fetches ``url`` to ``dest``, or raises DataError at once.

    Written whole to ``dest.part``, checked (a gzipped IDX file; ``expected``:
    its published (bytes, SHA-256)), then renamed: a file that fails the check
    (an HTML error page, a truncated or altered file) is deleted, never cached.
    A cached ``dest`` is checked again before use, and fetched anew if bad.
    """
    import urllib.error
    import urllib.request

    dest = Path(dest)
    if dest.is_file():
        try:
            _check_download(dest, url, expected)
            return dest
        except ValueError:
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise
        reason = getattr(e, "reason", e)
        raise DataError(
            f"{url}: could not download ({reason}); without network, set data.source_dir to a directory "
            f"holding the MNIST IDX files ({', '.join(f for pair in MNIST_FILES.values() for f in pair)})"
        ) from None
    try:
        _check_download(tmp, url, expected)
    except ValueError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{url}: the download is not the MNIST file {dest.name}: {e}; deleted, not cached") from None
    tmp.replace(dest)
    return dest


def mnist_source(
    source_dir: str | os.PathLike | None = None, url: str = MNIST_URL, download_dir: str | os.PathLike | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every MNIST digit available, per split: (uint8 (N, 28, 28), labels).

    From the IDX files in ``source_dir``, or downloaded from ``url`` into a
    folder of ``download_dir`` named after the URL (:func:`url_key`), checked
    against the published checksums when the URL is the official mirror. A gzip
    stream that ends early or fails its CRC, or an IDX header that disagrees
    with the data, raises DataError: never a partial set.
    """
    if source_dir is None:
        if download_dir is None:
            raise DataError("mnist: give data.source_dir (a directory of the MNIST IDX files) or a download directory")
        source_dir = Path(download_dir) / url_key(url)
        published = PUBLISHED_CHECKSUMS.get(base_url(url), {})
        for pair in MNIST_FILES.values():
            for name in pair:
                download(base_url(url) + name, source_dir / name, published.get(name))
    return {split: read_mnist(source_dir, split) for split in MNIST_FILES}
