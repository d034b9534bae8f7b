"""TFDS builders for the 1989-shaped datasets (importing this module registers them).

``mnist1989`` and ``usps`` are prepared as ``array_record`` and read with
``tfds.data_source``, which needs no TensorFlow::

    import lecun_jax.data.tfds_datasets  # registers the builders (lecun_jax.data.load does it itself)
    import tensorflow_datasets as tfds
    ds = tfds.data_source('usps', builder_kwargs={'file_format': 'array_record'})
    ds['train'][0]  # {'image': float32 (16, 16, 1), 'label': 6, 'index': 0}

The default config, ``shipped``, prepares from the copies inside the package.
To prepare from a directory of the official files (MNIST IDX ``.gz``; ESL
``zip.train.gz``/``zip.test.gz``), pass ``config=source_config(name, dir)``
(or use :func:`lecun_jax.data.load` with ``source_dir=``); its name carries a
hash of the files' contents, so different sources never share a cache.

Examples keep the 1989 presentation order (TFDS would otherwise shuffle them
by key): ``index`` is the position in the split, and for ``mnist1989``,
``source_index`` the digit's index in the official MNIST split.

Preparation also writes ``lecun_jax_digests.json`` beside the prepared files:
where the digits came from (the shipped copy, a directory or a URL, with each
source file's SHA-256) and the digest of every split's arrays as read from those
files. :func:`read_prepared` and :func:`prepared_record` read the two back, and
:func:`lecun_jax.data.load` checks one against the other, so an edited or
truncated prepared copy is refused, not trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from lecun_jax.data import downloads, sources

_CITATION_1989 = """@article{lecun1989backpropagation,
  title={Backpropagation Applied to Handwritten Zip Code Recognition},
  author={LeCun, Y. and Boser, B. and Denker, J. S. and Henderson, D. and Howard, R. E. and Hubbard, W. and Jackel, L. D.},
  journal={Neural Computation}, volume={1}, number={4}, pages={541--551}, year={1989}}"""
_CITATION_MNIST = """@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Y. and Bottou, L. and Bengio, Y. and Haffner, P.},
  journal={Proceedings of the IEEE}, volume={86}, number={11}, pages={2278--2324}, year={1998}}"""

FILE_FORMAT = "array_record"
DIGESTS = "lecun_jax_digests.json"  # in each prepared copy: its source and its arrays' digests


@dataclasses.dataclass(eq=False)
class SourceConfig(tfds.core.BuilderConfig):
    """Where a builder takes its input: the shipped copy, a directory, or a URL to download from."""

    source_dir: str | None = None
    url: str | None = None


SHIPPED = SourceConfig(name="shipped", description="the exact source pixels shipped inside lecun_jax")
DOWNLOAD = SourceConfig(name="download", description="the official MNIST files, downloaded", url=sources.MNIST_URL)


def _features(extra: dict) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=sources.IMAGE_SHAPE, dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=sources.NUM_CLASSES),
            "index": np.int32,
            **extra,
        }
    )


class _Builder1989(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared by the 1989-shaped datasets: features, order, and the source switch."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": f"Writes {DIGESTS} (the source and the digests of its arrays) at preparation; downloads cached per URL.",
    }
    BUILDER_CONFIGS = [SHIPPED]
    DESCRIPTION = HOMEPAGE = CITATION = ""
    EXTRA_FEATURES: dict = {}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=_features(self.EXTRA_FEATURES),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            disable_shuffling=True,  # keep the 1989 presentation order
        )

    def _read(self, config: SourceConfig, download_dir) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
        """Per split: (images (N, 16, 16, 1), labels, extra features)."""
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        splits = self._read(self.builder_config, dl_manager.download_dir)
        record = {
            "source": source_record(self.name, self.builder_config, dl_manager.download_dir),
            "examples": {s: len(v[1]) for s, v in splits.items()},
            "arrays": {s: sources.array_digest(v[0], v[1]) for s, v in splits.items()},
        }
        # self.data_dir is TFDS's temporary folder here, renamed into place when preparation succeeds
        (epath.Path(self.data_dir) / DIGESTS).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return {split: self._generate_examples(*v) for split, v in splits.items()}

    def _generate_examples(self, images, labels, extra):
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": labels[i], "index": i, **{k: v[i] for k, v in extra.items()}}


class Mnist1989(_Builder1989):
    """Karpathy's MNIST proxy of the 1989 data: 7,291 / 2,007 digits at 16x16."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass config=source_config('mnist1989', DIR), DIR holding the MNIST IDX .gz files."
    DESCRIPTION = (
        f"7,291 digits drawn without replacement (seed {sources.MNIST1989_SEED}) from the first 10,000 MNIST "
        "training digits and 2,007 from the 10,000 test digits; resized 28->16 like torch's bilinear "
        "interpolate (align_corners=False, no antialias); scaled x/127.5 - 1. MNIST is CC BY-SA 3.0 "
        "(LeCun, Cortes, Burges)."
    )
    HOMEPAGE = "https://github.com/karpathy/lecun1989-repro"
    CITATION = _CITATION_MNIST
    EXTRA_FEATURES = {"source_index": np.int32}

    def _read(self, config, download_dir):
        src = sources.mnist1989_source(config.source_dir)
        return {s: (sources.resize_mnist(x), y, {"source_index": i}) for s, (x, y, i) in src.items()}


class Usps(_Builder1989):
    """The USPS zip-code digits of LeCun et al. (1989): 7,291 / 2,007 at 16x16."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass config=source_config('usps', DIR), DIR holding zip.train.gz and zip.test.gz."
    DESCRIPTION = (
        "Segmented, size-normalised numerals from U.S. Postal Service envelopes, the 7,291/2,007 split of "
        "LeCun et al. (1989), as distributed with The Elements of Statistical Learning (Hastie, Tibshirani, "
        "Friedman): grey values in [-1, 1], 4 decimals."
    )
    HOMEPAGE = "https://hastie.su.domains/ElemStatLearn/data.html"
    CITATION = _CITATION_1989

    def _read(self, config, download_dir):
        return {s: (x, y, {}) for s, (x, y) in sources.usps_source(config.source_dir).items()}


class Mnist16(_Builder1989):
    """Every MNIST digit available, at 16x16 as mnist1989: for the "more data" experiments."""

    BUILDER_CONFIGS = [DOWNLOAD]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass config=source_config('mnist16', DIR), DIR holding the MNIST IDX .gz files."
    DESCRIPTION = (
        "All MNIST training and test digits found in the source (60,000 / 10,000 in the official files), "
        "in their official order, resized 28->16 like torch's bilinear interpolate (align_corners=False, no "
        "antialias) and scaled x/127.5 - 1, as mnist1989. MNIST is CC BY-SA 3.0 (LeCun, Cortes, Burges)."
    )
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
    CITATION = _CITATION_MNIST
    EXTRA_FEATURES = {"source_index": np.int32}

    def _read(self, config, download_dir):
        src = downloads.mnist_source(config.source_dir, config.url or sources.MNIST_URL, _download_folder(download_dir))
        return {
            s: (sources.resize_mnist(x), y, {"source_index": np.arange(len(y), dtype=np.int32)})
            for s, (x, y) in src.items()
        }


BUILDERS = {"mnist1989": Mnist1989, "usps": Usps, "mnist16": Mnist16}
_SOURCE_FILES = {
    "mnist1989": [f for pair in sources.MNIST_FILES.values() for f in pair],
    "mnist16": [f for pair in sources.MNIST_FILES.values() for f in pair],
    "usps": list(sources.USPS_FILES.values()),
}


def _download_folder(download_dir) -> Path:
    return Path(download_dir) / "mnist16"


def source_record(name: str, config: SourceConfig, download_dir) -> dict:
    """Where a prepared copy's digits come from: shipped / directory / URL, and the SHA-256 of each file read."""
    if config.source_dir is not None:
        folder, out = Path(config.source_dir), {"kind": "directory", "directory": config.source_dir}
    elif config.url is not None:
        url = config.url
        folder = _download_folder(download_dir) / downloads.url_key(url)
        out = {"kind": "url", "url": downloads.base_url(url)}
    else:
        return sources.shipped_record(name)
    return out | {"files": {f: sources.sha256(folder / f) for f in _SOURCE_FILES[name]}}


def source_config(name: str, source_dir: str | os.PathLike | None, url: str | None = None) -> SourceConfig:
    """The builder config of dataset ``name`` reading ``source_dir``.

    None: the shipped copy (mnist1989, usps) or a download from ``url``
    (mnist16; the official mirror by default). The config's name carries a hash
    of the source files' contents, or of a non-default URL.
    """
    if source_dir is None:
        if name != "mnist16":
            return SHIPPED
        if url in (None, sources.MNIST_URL):
            return DOWNLOAD
        return SourceConfig(name=downloads.url_key(url), description=f"downloaded from {url}", url=url)
    what = f"data.source_dir must hold the official {name} files: {', '.join(_SOURCE_FILES[name])}"
    source_dir = sources.check_dir(source_dir, what).resolve()
    h = hashlib.sha256()
    for f in _SOURCE_FILES[name]:
        path = sources.check_file(source_dir / f, f"the {name} source needs {', '.join(_SOURCE_FILES[name])}")
        try:
            h.update(sources.sha256(path).encode())
        except OSError as e:
            raise sources.DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return SourceConfig(
        name=f"dir-{h.hexdigest()[:12]}",
        description=f"prepared from the files in {source_dir}",
        source_dir=str(source_dir),
    )


# ---------------------------------------------------------------------------
# Reading a prepared copy back.


def read_prepared(builder, name: str, splits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(images float32, labels int32) of each of ``splits`` of a prepared copy, in presentation order;
    any failure to read it is a DataError naming it."""
    where = builder.data_dir
    out = {}
    try:
        data_sources = builder.as_data_source()
        for split in splits:
            items = data_sources[split].__getitems__(range(len(data_sources[split])))
            images = np.stack([it["image"] for it in items]).astype(np.float32)
            labels = np.asarray([it["label"] for it in items], dtype=np.int32)
            order = np.asarray([it["index"] for it in items])
            if not np.array_equal(order, np.arange(len(items))):
                raise sources.DataError(f"{name}/{split}: the prepared examples in {where} are out of presentation order; "
                                        "delete that folder and run again")
            out[split] = (images, labels)
    except sources.DataError:
        raise
    except Exception as e:  # riegeli's "Corrupted Riegeli/records file", TFDS's errors of a damaged copy, ...
        raise unreadable(name, where, e) from None
    return out


def unreadable(name: str, folder, e: Exception) -> sources.DataError:
    """The one-line DataError of a prepared copy in ``folder`` that TFDS cannot read (``e``)."""
    reason = " ".join(str(e).split())
    reason = reason if len(reason) <= 160 else reason[:157] + "..."
    return sources.DataError(f"{name}: the prepared copy in {folder} cannot be read ({type(e).__name__}: {reason}); "
                             "delete that folder and run again")


def prepared_record(folder, name: str) -> dict:
    """The :data:`DIGESTS` record written when the copy in ``folder`` was prepared (a DataError if absent or unreadable)."""
    path = Path(folder) / DIGESTS
    try:
        record = json.loads(path.read_text())
        if isinstance(record, dict) and isinstance(record.get("arrays"), dict):
            return record
    except (OSError, ValueError):
        pass
    raise sources.DataError(f"{name}: the prepared copy in {path.parent} has no readable record of what was prepared "
                            f"({path.name}); delete that folder and run again")
