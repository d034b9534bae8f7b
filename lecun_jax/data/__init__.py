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
checks their SHA-256 before use. The readers live in ``lecun_jax.data.sources``
(re-exported here), the MNIST downloads in ``lecun_jax.data.downloads``; TFDS
builders (``lecun_jax.data.tfds_datasets``) turn those files, or a directory of the
official files, into ``array_record`` datasets and read them back with
``tfds.data_source`` (no TensorFlow); :func:`load` checks what they read
against the digests recorded at preparation and returns it as in-memory arrays
that training keeps on the device (a shipped dataset's are also cached decoded,
so that later loads skip TFDS).

Layering: ``sources`` <- ``downloads`` <- ``tfds_datasets`` <- ``data``;
TensorFlow Datasets is imported only when :func:`load` reads through TFDS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
from absl import logging as absl_logging

from lecun_jax.files import write_npz
from lecun_jax.data.sources import (  # noqa: F401  (re-exported: data.read_idx, data.DataError, ...)
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
    draw_mnist1989_indices,
    manifest,
    mnist1989_source,
    read_esl,
    read_idx,
    read_mnist,
    resize_mnist,
    sha256,
    shipped_file,
    shipped_record,
    usps_source,
)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in memory: images (N, 16, 16, 1) float32, labels (N,) int32."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """``source``: where the digits came from (``kind`` shipped | directory | url, and
    the SHA-256 of each source file) and the digests of the prepared arrays, as
    recorded when the TFDS copy was prepared (see ``tfds_datasets.DIGESTS``)."""

    name: str
    train: Split
    test: Split
    source: dict = dataclasses.field(default_factory=dict, compare=False)

    def split(self, name: str) -> Split:
        return {"train": self.train, "test": self.test}[name]


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
        copy, 60,000 from the official files), tested on mnist1989's draw of
        2,007 test digits from the same source's test files (exactly mnist1989's
        test split when the source is the official MNIST; all its test digits
        when it has fewer than the 10,000 the draw is made from), so that its
        results compare with the 1989-sized runs.
      source_dir: a directory of the official files to prepare from; None
        prepares from the copies shipped inside the package (for ``mnist``:
        downloads the official files from ``mnist_url``). Both splits always
        come from the same source.
      data_dir: where TFDS keeps prepared datasets (None: TFDS's default,
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    """
    if name not in DATASETS:
        raise DataError(f"data.name={name!r}: unknown dataset; valid: {', '.join(DATASETS)}")
    for field, value in (("source_dir", source_dir), ("tfds_dir", data_dir)):
        if value is not None and not os.fspath(value).strip():  # Path('') is the current folder: never meant
            raise DataError(f"data.{field}='': an empty directory name; give a directory, or leave it unset (None)")
    _check_tfds_dir(_tfds_data_dir(data_dir))
    splits, source = _load_splits("mnist16" if name == "mnist" else name, source_dir, data_dir, mnist_url)
    test = _mnist_test(splits["test"]) if name == "mnist" else splits["test"]
    return Dataset(name=name, train=splits["train"], test=test, source=source)


def _mnist_test(test: Split) -> Split:
    """``mnist``'s test split: mnist1989's recorded draw from the source's own test digits (all of them if fewer than 10,000)."""
    if len(test) < MNIST1989_POOL["test"]:
        return test
    index = draw_mnist1989_indices()["test"]
    return Split(images=test.images[index], labels=test.labels[index])


def _check_tfds_dir(root: Path) -> None:
    """A DataError when the TFDS data_dir, or the nearest of its parents that exists, is not a directory."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "" if existing == root else f" ({existing} is a file)"
        raise DataError(f"{root}: not a directory{where}; data.tfds_dir (or $TFDS_DATA_DIR) is where TFDS keeps prepared datasets")


SPLITS = ("train", "test")
ARRAYS_CACHE = "lecun_jax_arrays"  # under the TFDS data_dir: the shipped datasets' arrays, decoded once


def _tfds_data_dir(data_dir) -> Path:
    """Where TFDS keeps prepared datasets: ``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return Path(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def _prepared_stamp(root: Path, name: str) -> list:
    """(file, size, mtime) of every file of the prepared shipped copy of ``name``: changes when it is rebuilt or touched."""
    folder = root / name / "shipped"
    return sorted([str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns] for f in folder.rglob("*") if f.is_file())


def _cached_arrays(name: str, data_dir) -> dict[str, Split] | None:
    """The shipped dataset's splits from the decoded copy written by an earlier :func:`load`, or None.

    Used only when the prepared TFDS copy it was decoded from is unchanged (file
    sizes and times) and the arrays still have the shipped manifest's digests;
    anything else reads through TFDS again. Saves every run after the first
    the TFDS import and the per-example decoding.
    """
    root = _tfds_data_dir(data_dir)
    path = root / ARRAYS_CACHE / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            stamp = json.loads(str(z["stamp"]))
            arrays = {s: Split(images=z[f"{s}_images"], labels=z[f"{s}_labels"]) for s in SPLITS}
        if stamp != _prepared_stamp(root, name):
            return None
    except (OSError, KeyError, ValueError):
        return None
    expected = manifest()["arrays"][name]
    if any(array_digest(arrays[s].images, arrays[s].labels) != expected[s] for s in SPLITS):
        return None
    return arrays


def _write_cached_arrays(name: str, data_dir, out: dict[str, Split]) -> None:
    root = _tfds_data_dir(data_dir)
    try:
        write_npz(root / ARRAYS_CACHE / f"{name}.npz", stamp=np.asarray(json.dumps(_prepared_stamp(root, name))),
                  **{f"{s}_{k}": getattr(v, k) for s, v in out.items() for k in ("images", "labels")})
    except OSError as e:  # a read-only data_dir: no cache, same data
        absl_logging.info("no decoded-array cache in %s: %s", root, e)


def _load_splits(name: str, source_dir, data_dir, url) -> tuple[dict[str, Split], dict]:
    """({split: Split}, source record) of TFDS builder ``name``'s train and test splits, prepared (once)
    from the source, read with data_source.

    What is read back is checked against the digests recorded when it was
    prepared (the shipped manifest's, or the prepared copy's ``DIGESTS`` file):
    an edited, truncated or unreadable prepared copy is a DataError telling to
    delete it, never a run on other digits.
    """
    shipped = source_dir is None and name in manifest()["arrays"]
    if shipped and (cached := _cached_arrays(name, data_dir)):
        return cached, _shipped_record(name)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()

    from lecun_jax.data import tfds_datasets

    config = tfds_datasets.source_config(name, source_dir, url)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS warns about its own custom configs and empty folders
    try:
        try:
            builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir),
                                   config=config, file_format=tfds_datasets.FILE_FORMAT)
        except Exception as e:  # reading an existing copy's dataset_info.json, features.json
            folder = _tfds_data_dir(data_dir) / name / config.name / str(tfds_datasets.BUILDERS[name].VERSION)
            if folder.is_dir():
                raise tfds_datasets.unreadable(name, folder, e) from None
            raise
        if not builder.is_prepared():
            # TFDS's own "Downloading and preparing dataset Unknown size" is not what happens here
            what = config.source_dir or (config.url if config.url else "the copy shipped in lecun_jax")
            print(f"preparing {name} ({config.name}) from {what} into {builder.data_dir} (once)", flush=True)
            with contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare()
    finally:
        absl_logging.set_verbosity(verbosity)
    where = builder.data_dir
    out = {s: Split(images=x, labels=y) for s, (x, y) in tfds_datasets.read_prepared(builder, name, SPLITS).items()}
    record = _shipped_record(name) if shipped else tfds_datasets.prepared_record(where, name)
    for split, v in out.items():
        if array_digest(v.images, v.labels) != record["arrays"].get(split):
            prepared = record.get("examples", {}).get(split)
            what = (f"{len(v):,} examples where {prepared:,} were prepared" if prepared not in (None, len(v))
                    else f"arrays that differ from the {'shipped manifest' if shipped else 'ones prepared'}")
            raise DataError(f"{name}/{split}: the prepared copy in {where} holds {what}; delete that folder and run again")
    if shipped:
        _write_cached_arrays(name, data_dir, out)
    return out, record if shipped else {**record.get("source", {}), "arrays": record["arrays"]}


def _shipped_record(name: str) -> dict:
    return shipped_record(name) | {"arrays": manifest()["arrays"][name]}


class ConfigError(ValueError):
    """A config field has a value the run cannot use (``lecun_jax.config.ConfigError`` is this class).

    Defined here, below config, because :func:`for_config` raises it too: a size
    the loaded training split cannot give is a config fault (exit 2), not a data one.
    """


# Datasets whose training split has SPLIT_SIZES["train"] digits whatever their source, so that
# sizes are checked before loading; mnist's depends on its source (checked after loading).
FIXED_SIZE = ("mnist1989", "usps")


def size_problem(name: str, num_train: int | None, *, train_size: int | None = None,
                 validation_size: int | None = None, batch_size: int | None = None,
                 sdlm_samples: int | None = None) -> str | None:
    """The split-size rule, the one place it is written: the first size asked for that a training
    split of ``num_train`` digits (None: not known) cannot give, as
    ``data.train_size=8000: usps has 7,291 training digits; valid: 1 to 7291``, or None.

    ``train_size`` digits are kept (None: all), the last ``validation_size`` of
    them held out, and ``batch_size`` and ``sdlm_samples`` drawn from what is left.
    With ``num_train`` None only ``train_size`` bounds the others.
    """
    if train_size is not None and num_train is not None and not 1 <= train_size <= num_train:
        return f"data.train_size={train_size}: {name} has {num_train:,} training digits; valid: 1 to {num_train}"
    left = train_size if train_size is not None else num_train
    if left is None:
        return None
    if validation_size is not None:
        if not 1 <= validation_size < left:
            valid = f"1 to {left - 1}" if left > 1 else "none (holding out needs 2 training digits or more)"
            return f"data.validation_size={validation_size}: must leave training digits of the {left:,}; valid: {valid}"
        left -= validation_size
    for field, value in (("train.batch_size", batch_size), ("optimizer.sdlm_samples", sdlm_samples)):
        if value is not None and value > left:
            return f"{field}={value}: larger than the {left:,} training digits; valid: 1 to {left}"
    return None


def check_config_sizes(config, num_train: int | None = None) -> None:
    """:func:`size_problem` of ``config``'s fields, as a ConfigError naming the field.

    ``num_train``: the loaded training split's size; None before loading, where
    the size of a :data:`FIXED_SIZE` dataset is known.
    """
    d = config.data
    if num_train is None and d.name in FIXED_SIZE:
        num_train = SPLIT_SIZES["train"]
    problem = size_problem(
        d.name, num_train, train_size=d.train_size, validation_size=d.validation_size, batch_size=config.train.batch_size,
        sdlm_samples=config.optimizer.sdlm_samples if config.optimizer.name == "sdlm" else None,
    )
    if problem:
        raise ConfigError(f"config.{problem}")


def for_config(config) -> Dataset:
    """The dataset of ``config.data`` as a run trains on it: loaded, its training
    split cut to ``train_size``, the last ``validation_size`` digits held out."""
    d = config.data
    dataset = load(d.name, source_dir=d.source_dir, data_dir=d.tfds_dir, mnist_url=d.mnist_url)
    check_config_sizes(config, len(dataset.train))
    dataset = select_train(dataset, d.train_size, d.train_subset, d.subset_seed)
    return dataset if d.validation_size is None else hold_out(dataset, d.validation_size)


def hold_out(dataset: Dataset, size: int) -> Dataset:
    """Trains on all but the last ``size`` training digits and tests on those: for tuning
    without looking at the test split."""
    n = len(dataset.train)
    problem = size_problem(dataset.name, n, validation_size=size)
    if problem:
        raise DataError(problem)
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
    problem = size_problem(dataset.name, n, train_size=size)
    if problem:
        raise DataError(problem)
    if subset == "prefix":
        keep = np.arange(size)
    elif subset == "random":
        keep = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    else:
        raise DataError(f"data.train_subset={subset!r}: valid: {', '.join(SUBSETS)}")
    train = Split(images=dataset.train.images[keep], labels=dataset.train.labels[keep])
    return dataclasses.replace(dataset, train=train)

