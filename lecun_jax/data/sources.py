"""The digit files: readers of the official formats, the torch-style resize, the
mnist1989 draw, and the copies shipped inside the package (``lecun_jax/shipped``).

NumPy only, and nothing of the package: ``downloads`` fetches the official MNIST
files, the TFDS builders (``tfds_datasets``) prepare datasets from these, and
``data`` loads what they prepared.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import math
import os
import stat
import zlib
from pathlib import Path

import numpy as np

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
MANIFEST = SHIPPED_DIR / "MANIFEST.json"

IMAGE_SHAPE = (16, 16, 1)
NUM_CLASSES = 10
SPLIT_SIZES = {"train": 7291, "test": 2007}

# mnist1989: which MNIST digits, drawn how. The draw only uses the first
# 10,000 training digits, so anyone holding the official files (60,000) gets
# the same digits.
MNIST1989_SEED = 1337  # Karpathy's seed, kept as a nod; the draw itself is ours
MNIST1989_POOL = {"train": 10_000, "test": 10_000}

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # the mirror TFDS itself uses
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
USPS_FILES = {"train": "zip.train.gz", "test": "zip.test.gz"}


class DataError(ValueError):
    """A data file is missing, malformed or not what it should be."""


# ---------------------------------------------------------------------------
# Readers of the official file formats.


def _reason(e: OSError, missing: str) -> str:
    if e.errno == errno.ENOENT:
        return missing
    if e.errno == errno.ELOOP:
        return "a symlink loop"
    return e.strerror or str(e)


def check_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` after checking that it is a directory; a DataError naming what is wrong (and ``what`` it should hold)."""
    if not str(path).strip():
        raise DataError(f"an empty directory name ({what}); give a directory, or none at all")
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise DataError(f"{path}: {_reason(e, 'directory not found')} ({what})") from None
    if not stat.S_ISDIR(mode):
        raise DataError(f"{path}: not a directory ({what})")
    return path


def check_file(path: str | os.PathLike, what: str = "") -> Path:
    """``path`` after checking that it is a regular file (a DataError otherwise)."""
    path = Path(path)
    hint = f" ({what})" if what else ""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise DataError(f"{path}: {_reason(e, 'file not found')}{hint}") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: a directory where a data file was expected{hint}")
    return path


def _read_bytes(path: Path) -> bytes:
    check_file(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({_reason(e, 'file not found')})") from None


def gunzip(raw: bytes) -> bytes:
    """The payload of a whole gzip file; ValueError saying why not."""
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"not a complete gzip file ({e})") from None


def _read_gz(path: Path) -> bytes:
    raw = _read_bytes(path)
    try:
        return gunzip(raw)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def parse_idx(raw: bytes, ndim: int) -> np.ndarray:
    """An IDX payload of unsigned bytes -> array; ValueError saying what is wrong."""
    magic = 0x0800 + ndim  # 0x00000801 labels, 0x00000803 images
    if len(raw) < 4 + 4 * ndim:
        raise ValueError("too short for an IDX header")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise ValueError(f"IDX magic number {got:#010x} where {magic:#010x} (uint8, {ndim}-D) was expected")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise ValueError(f"header says {shape} ({int(np.prod(shape))} bytes) but the file holds {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def read_idx(path: str | os.PathLike, *, ndim: int) -> np.ndarray:
    """Reads a gzipped MNIST IDX file of unsigned bytes (ndim 3: images, 1: labels)."""
    path = Path(path)
    raw = _read_gz(path)
    try:
        return parse_idx(raw, ndim)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def read_mnist(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads (images uint8 (N, 28, 28), labels int32 (N,)) of an official MNIST split."""
    directory = check_dir(directory, f"the MNIST directory should hold {', '.join(MNIST_FILES[split])}")
    image_file, label_file = (directory / f for f in MNIST_FILES[split])
    images = read_idx(image_file, ndim=3)
    labels = read_idx(label_file, ndim=1).astype(np.int32)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{image_file}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels")
    _check_labels(labels, label_file)
    return images, labels


def read_esl(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads an ESL "zip" file: one digit a line, label then 256 values in [-1, 1]."""
    path = Path(path)
    text = _read_gz(path).decode("ascii", errors="replace")
    rows, linenos = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 257:
            raise DataError(f"{path}, line {lineno}: {len(fields)} values where 257 (label + 16x16 pixels) were expected")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DataError(f"{path}, line {lineno}: a value is not a number") from None
        if not all(map(math.isfinite, values)):  # float() takes nan and inf
            bad = next(f for f, v in zip(fields, values) if not math.isfinite(v))
            raise DataError(f"{path}, line {lineno}: {'the label' if bad is fields[0] else 'a grey value'} is {bad!r}, not a finite number")
        rows.append(values)
        linenos.append(lineno)
    if not rows:
        raise DataError(f"{path}: no digits in the file")
    table = np.asarray(rows, dtype=np.float64)
    labels = table[:, 0]
    if np.any(labels != np.round(labels)):
        raise DataError(f"{path}, line {linenos[int(np.flatnonzero(labels != np.round(labels))[0])]}: the label is not a whole number")
    labels = labels.astype(np.int32)
    _check_labels(labels, path)
    pixels = table[:, 1:]
    if pixels.min() < -1.0 or pixels.max() > 1.0:
        raise DataError(f"{path}: pixel values outside [-1, 1] (min {pixels.min()}, max {pixels.max()})")
    return pixels.astype(np.float32).reshape(-1, *IMAGE_SHAPE), labels


def _check_labels(labels: np.ndarray, path) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(f"{path}: label {labels[bad[0]]} at example {bad[0]} is outside 0-9")


# ---------------------------------------------------------------------------
# Resize and the mnist1989 draw.


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation as torch computes them.

    ``align_corners=False``: source coordinate (d + 0.5) * n_in / n_out - 0.5,
    clamped at 0; no antialiasing (each output reads its two neighbours only).
    """
    scale = n_in / n_out
    w = np.zeros((n_out, n_in))
    for d in range(n_out):
        src = max((d + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        w[d, i0] += 1.0 - frac
        w[d, i1] += frac
    return w


def resize_mnist(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 16, 16, 1) in [-1, 1], Karpathy's preprocessing.

    Karpathy scales to [-1, 1] and then resizes in float32. Resizing is affine,
    so we resize the integer pixels first: at 28->16 every weight is a multiple
    of 1/8, every product and sum is exact in float64, and only the final
    x/127.5 - 1 rounds. The result is the correctly rounded value of the same
    arithmetic, identical on every machine; torch's float32 result differs by
    at most a couple of float32 ulps.
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"resize_mnist expects (N, 28, 28) images, got {images.shape}")
    m = bilinear_matrix(28, 16)
    resized = m @ images.astype(np.float64) @ m.T
    return (resized / 127.5 - 1.0).astype(np.float32)[..., None]


def draw_mnist1989_indices(seed: int = MNIST1989_SEED) -> dict[str, np.ndarray]:
    """The MNIST digits of ``mnist1989``: indices in presentation order, per split.

    One generator per split, so neither draw depends on the order the splits
    are made in (Karpathy's depended on a Python set's iteration order).
    """
    out = {}
    for i, split in enumerate(("train", "test")):
        rng = np.random.default_rng([seed, i])
        out[split] = rng.permutation(MNIST1989_POOL[split])[: SPLIT_SIZES[split]].astype(np.int32)
    return out


# ---------------------------------------------------------------------------
# The shipped copies.


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of a split's float32 pixels and int32 labels (what training sees)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int32).tobytes())
    return h.hexdigest()


def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def shipped_record(name: str) -> dict:
    """Where a shipped dataset's digits come from: the SHA-256 of each of its shipped files."""
    return {"kind": "shipped", "files": {f: v["sha256"] for f, v in manifest()["files"].items() if f.startswith(name)}}


def shipped_file(relpath: str) -> Path:
    """Path of a shipped file (under SHIPPED_DIR, read at call time: tests point it at a
    copy), after checking its SHA-256 against the package's manifest."""
    path = Path(SHIPPED_DIR) / relpath
    expected = manifest()["files"][relpath]["sha256"]
    if not path.is_file():
        raise DataError(f"{path}: shipped data file missing; reinstall lecun_jax")
    got = sha256(path)
    if got != expected:
        raise DataError(f"{path}: SHA-256 {got[:16]}... does not match the manifest's {expected[:16]}...; reinstall lecun_jax")
    return path


def mnist1989_source(source_dir: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split: (uint8 28x28 source pixels, labels, MNIST indices), in presentation order.

    From the shipped copy, or, with ``source_dir``, from the official MNIST IDX
    files there (which must hold at least the first 10,000 training digits).
    """
    if source_dir is None:
        with np.load(shipped_file("mnist1989.npz")) as z:
            return {s: (z[f"{s}_images"], z[f"{s}_labels"].astype(np.int32), z[f"{s}_index"]) for s in ("train", "test")}
    idx = draw_mnist1989_indices()
    out = {}
    for split in ("train", "test"):
        images, labels = read_mnist(source_dir, split)
        if len(images) < MNIST1989_POOL[split]:
            raise DataError(
                f"{Path(source_dir) / MNIST_FILES[split][0]}: {len(images)} digits; mnist1989 draws from the first "
                f"{MNIST1989_POOL[split]:,}, so at least that many are needed"
            )
        out[split] = (images[idx[split]], labels[idx[split]], idx[split])
    return out


def usps_source(source_dir: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: (float32 images (N, 16, 16, 1), labels), from the shipped files or ``source_dir``."""
    if source_dir is not None:
        source_dir = check_dir(source_dir, "the USPS directory should hold zip.train.gz and zip.test.gz")
    return {
        split: read_esl(shipped_file(f"usps/{name}") if source_dir is None else source_dir / name)
        for split, name in USPS_FILES.items()
    }


def build_shipped(mnist_dir: str | os.PathLike, usps_dir: str | os.PathLike, out_dir: str | os.PathLike = SHIPPED_DIR) -> dict:
    """Writes the shipped copies and their manifest from the official files.

    ``python -m lecun_jax.data build --mnist_dir=... --usps_dir=...`` is how
    ``lecun_jax/shipped`` was made (from the official MNIST and USPS files).
    """
    out_dir = Path(out_dir)
    (out_dir / "usps").mkdir(parents=True, exist_ok=True)
    src = mnist1989_source(mnist_dir)
    arrays = {}
    for split, (images, labels, index) in src.items():
        arrays |= {f"{split}_images": images, f"{split}_labels": labels.astype(np.uint8), f"{split}_index": index}
    np.savez_compressed(out_dir / "mnist1989.npz", seed=np.int64(MNIST1989_SEED), **arrays)
    for name in USPS_FILES.values():
        (out_dir / "usps" / name).write_bytes(Path(usps_dir, name).read_bytes())
    files = {}
    for rel in ["mnist1989.npz", *(f"usps/{n}" for n in USPS_FILES.values())]:
        files[rel] = {"sha256": sha256(out_dir / rel), "bytes": (out_dir / rel).stat().st_size}
    digests = {
        "mnist1989": {s: array_digest(resize_mnist(src[s][0]), src[s][1]) for s in src},
        "usps": {s: array_digest(*v) for s, v in usps_source(usps_dir).items()},
    }
    info = {"files": files, "arrays": digests, "mnist1989_seed": MNIST1989_SEED}
    (out_dir / "MANIFEST.json").write_text(json.dumps(info, indent=2) + "\n")
    return info

