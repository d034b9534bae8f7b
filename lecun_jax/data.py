"""Digit data of the 1989 shape: file readers, the torch-style resize, loading.

Two datasets, both 7,291 train / 2,007 test, 16x16x1, grey values in [-1, 1]
with background -1:

* ``usps``: the real U.S. Postal Service digits of LeCun et al. (1989), in the
  text format of *The Elements of Statistical Learning* ("zip" data).
* ``mnist1989``: Karpathy's (2022) MNIST proxy: 7,291 digits drawn without
  replacement from the first 10,000 MNIST training digits and 2,007 from the
  MNIST test digits by a recorded seed, resized 28->16 exactly like
  ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``,
  scaled x/127.5 - 1.

The package ships the exact source pixels of both (``lecun_jax/shipped``) and
checks their SHA-256 before use. The readers live in ``lecun_jax.sources``
(re-exported here); TFDS builders (``lecun_jax.tfds_datasets``) turn those
files, or a directory of the official files, into ``array_record`` datasets;
:func:`load` reads those back with ``tfds.data_source`` (no TensorFlow) into
in-memory arrays that training keeps on the device.

Layering: ``sources`` <- ``tfds_datasets`` <- ``data``; TensorFlow Datasets is
imported only when :func:`load` runs.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from absl import logging as absl_logging

from lecun_jax.sources import (  # noqa: F401  (re-exported: data.read_idx, data.DataError, ...)
    DOWNLOAD_TIMEOUT_S,
    IMAGE_SHAPE,
    MANIFEST,
    MNIST1989_POOL,
    MNIST1989_SEED,
    MNIST_FILES,
    MNIST_URL,
    NUM_CLASSES,
    SHIPPED_DIR,
    SPLIT_SIZES,
    USPS_FILES,
    DataError,
    array_digest,
    bilinear_matrix,
    build_shipped,
    download,
    draw_mnist1989_indices,
    manifest,
    mnist1989_source,
    mnist_source,
    read_esl,
    read_idx,
    read_mnist,
    resize_mnist,
    sha256,
    shipped_file,
    usps_source,
)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory: images (N, 16, 16, 1) float32, labels (N,) int32."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> np.ndarray:
        """The 1989 targets: +1 for the true class, -1 for the other nine."""
        return one_hot_pm1(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split

    def split(self, name: str) -> Split:
        return {"train": self.train, "test": self.test}[name]


def one_hot_pm1(labels) -> np.ndarray:
    return np.where(np.arange(NUM_CLASSES) == np.asarray(labels)[:, None], 1.0, -1.0).astype(np.float32)


# ---------------------------------------------------------------------------
# Loading through TFDS.

DATASETS = ("mnist1989", "usps", "mnist")
SUBSETS = ("prefix", "random")


def load(
    name: str = "mnist1989",
    *,
    source_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    mnist_url: str = MNIST_URL,
) -> Dataset:
    """Loads a dataset into memory through its TFDS builder.

    Args:
      name: ``mnist1989``, ``usps``, or ``mnist``: every MNIST training digit
        available (TFDS builder ``mnist16``: 10,000 in the project's reference
        copy, 60,000 from the official files), tested on mnist1989's 2,007 test
        digits so that its results compare with the 1989-sized runs.
      source_dir: a directory of the official files to prepare from; None
        prepares from the copies shipped inside the package (for ``mnist``:
        downloads the official files from ``mnist_url``).
      data_dir: where TFDS keeps prepared datasets (None: TFDS's default,
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    """
    if name not in DATASETS:
        raise DataError(f"data.name={name!r}: unknown dataset; valid: {', '.join(DATASETS)}")
    if name == "mnist":
        train = _load_splits("mnist16", source_dir, data_dir, mnist_url, ("train",))["train"]
        test = load("mnist1989", data_dir=data_dir).test
        return Dataset(name=name, train=train, test=test)
    splits = _load_splits(name, source_dir, data_dir, mnist_url, ("train", "test"))
    return Dataset(name=name, **splits)


def _load_splits(name: str, source_dir, data_dir, url, splits) -> dict[str, Split]:
    """Splits of TFDS builder ``name``, prepared (once) from the source, read with data_source."""
    import tensorflow_datasets as tfds

    from lecun_jax import tfds_datasets

    config = tfds_datasets.source_config(name, source_dir, url)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS warns about its own custom configs and empty folders
    try:
        sources = tfds.data_source(
            name,
            data_dir=None if data_dir is None else os.fspath(data_dir),
            builder_kwargs={"config": config, "file_format": tfds_datasets.FILE_FORMAT},
        )
    finally:
        absl_logging.set_verbosity(verbosity)
    out = {}
    for split in splits:
        items = sources[split].__getitems__(range(len(sources[split])))
        images = np.stack([it["image"] for it in items]).astype(np.float32)
        labels = np.asarray([it["label"] for it in items], dtype=np.int32)
        order = np.asarray([it["index"] for it in items])
        if not np.array_equal(order, np.arange(len(items))):
            raise DataError(f"{name}/{split}: prepared examples are out of presentation order; delete the prepared copy in {data_dir or 'the TFDS data_dir'}")
        if source_dir is None and name in manifest()["arrays"]:
            expected = manifest()["arrays"][name][split]
            if array_digest(images, labels) != expected:
                raise DataError(
                    f"{name}/{split}: the prepared arrays do not match the shipped manifest; delete "
                    f"{name}/ under {data_dir or 'the TFDS data_dir'} and run again"
                )
        out[split] = Split(images=images, labels=labels)
    return out


def hold_out(dataset: Dataset, size: int) -> Dataset:
    """Trains on all but the last ``size`` training digits and tests on those: for tuning
    without looking at the test split."""
    n = len(dataset.train)
    if not 1 <= size < n:
        raise DataError(f"data.validation_size={size}: {dataset.name} has {n:,} training digits; valid: 1 to {n - 1}")
    t = dataset.train
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}[validation]",
        train=Split(images=t.images[: n - size], labels=t.labels[: n - size]),
        test=Split(images=t.images[n - size :], labels=t.labels[n - size :]),
    )


def select_train(dataset: Dataset, size: int | None, subset: str = "prefix", seed: int = 0) -> Dataset:
    """The dataset with its training split cut to ``size`` digits (None: unchanged).

    ``prefix`` keeps the first ``size`` in presentation order; ``random`` a
    subset drawn without replacement by ``seed``, kept in presentation order.
    """
    n = len(dataset.train)
    if size is None or size == n:
        return dataset
    if not 1 <= size <= n:
        raise DataError(f"data.train_size={size}: {dataset.name} has {n:,} training digits")
    if subset == "prefix":
        keep = np.arange(size)
    elif subset == "random":
        keep = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    else:
        raise DataError(f"data.train_subset={subset!r}: valid: {', '.join(SUBSETS)}")
    train = Split(images=dataset.train.images[keep], labels=dataset.train.labels[keep])
    return dataclasses.replace(dataset, train=train)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Rebuild lecun_jax/shipped from the official files.")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--mnist_dir", required=True)
    parser.add_argument("--usps_dir", required=True)
    args = parser.parse_args()
    print(json.dumps(build_shipped(args.mnist_dir, args.usps_dir), indent=2))
