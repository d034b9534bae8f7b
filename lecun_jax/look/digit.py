"""A drawing made into a digit the way the run's digits were made: NumPy only.

Both datasets start from a digit's bounding box, scaled preserving its aspect
ratio by a linear (area-averaging) transformation, so that a varying number of
source pixels falls into each target pixel and the result has grey levels
(LeCun et al. 1989, "Preprocessing"). They differ after that (docs/look.md):

- ``usps``: the box fills 16 pixels on its longer side, centred on the
  shorter; grey levels scaled per image to [-1, 1], background -1 (every
  shipped USPS digit spans exactly -1 to 1).
- ``mnist``: MNIST's recipe, a 20-pixel box moved in a 28x28 field so that its
  centre of mass falls on pixel (14, 14); then the package's own 28->16 resize
  and x/127.5 - 1, exactly as mnist1989's digits were made from MNIST's.

A drawing arrives as strokes (polylines and a pen width, in any one unit); it
is rasterised with anti-aliased round pens at FINE pixels per box pixel, then
normalised like any raster.
"""

from __future__ import annotations

import math

import numpy as np

from lecun_jax.data import resize_mnist

SIZE = 16  # the network's input: 16x16
FINE = 4  # raster pixels per box pixel when drawing strokes
CHUNK = 16  # segments measured together: consecutive ones lie close, so their window is small
STYLES = {"usps": (16, 16), "mnist": (20, 28)}  # style -> (box, field)
MAX_STROKES, MAX_POINTS = 100, 5000


class DrawingError(ValueError):
    """A drawing that cannot be made into a digit; the message is one line."""


def style_for(data_name: str) -> str:
    """The preprocessing of a dataset: ``usps`` for the 1989 digits, ``mnist`` for every MNIST-derived set."""
    return "usps" if data_name == "usps" else "mnist"


def area_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """(n_out, n_in) weights of an area-averaging resample by ``scale`` (output/input pixels),
    the content centred in the ``n_out`` pixels: each output pixel is the mean of the
    input it covers, the uncovered part counting as background 0."""
    offset = (n_out - n_in * scale) / 2
    lo = (np.arange(n_out)[:, None] - offset) / scale  # output pixel j covers input [lo_j, hi_j)
    hi = lo + 1 / scale
    edges = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, edges + 1) - np.maximum(lo, edges), 0, None)
    return overlap * scale


def _crop(raster: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(raster.any(1)), np.flatnonzero(raster.any(0))
    return raster[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def fit_box(raster: np.ndarray, box: int) -> np.ndarray:
    """The ink's bounding box scaled to ``box`` pixels on its longer side, aspect ratio kept."""
    ink = _crop(raster)
    scale = box / max(ink.shape)
    h, w = (max(1, round(n * scale)) for n in ink.shape)
    return area_matrix(ink.shape[0], h, scale) @ ink @ area_matrix(ink.shape[1], w, scale).T


def _centred(box: np.ndarray, field: int) -> np.ndarray:
    out = np.zeros((field, field))
    top, left = (field - box.shape[0]) // 2, (field - box.shape[1]) // 2
    out[top:top + box.shape[0], left:left + box.shape[1]] = box
    return out


def _by_mass(box: np.ndarray, field: int) -> np.ndarray:
    """MNIST's placement: the centre of mass (in pixel indices) on pixel field / 2, inside the field."""
    rows, cols = np.indices(box.shape)
    mass = box.sum()
    com = np.array([(rows * box).sum(), (cols * box).sum()]) / mass
    top, left = (int(np.clip(np.floor(field / 2 - c + 0.5), 0, field - n)) for c, n in zip(com, box.shape))
    out = np.zeros((field, field))
    out[top:top + box.shape[0], left:left + box.shape[1]] = box
    return out


def normalise_raster(raster, style: str) -> np.ndarray:
    """A raster of ink (any size, >= 0, 0 the background) -> the (16, 16) digit in [-1, 1]."""
    raster = np.asarray(raster, np.float64)
    if raster.ndim != 2 or not np.all(np.isfinite(raster)) or raster.min() < 0:
        raise DrawingError("a raster must be a 2-D array of finite ink values >= 0")
    if not raster.any():
        raise DrawingError("no ink: draw a digit")
    box_size, field = STYLES[style]
    box = fit_box(raster, box_size)
    box = box / box.max()  # the darkest ink is full ink, as in both datasets
    if style == "usps":
        return (2 * _centred(box, field) - 1).astype(np.float32)
    return resize_mnist(np.rint(255 * _by_mass(box, field))[None])[0, ..., 0]


def check_strokes(strokes, pen) -> tuple[list[np.ndarray], float]:
    """Strokes as arrays, or a DrawingError naming what is wrong."""
    if not isinstance(strokes, list) or not strokes or len(strokes) > MAX_STROKES:
        raise DrawingError(f"strokes: a list of 1 to {MAX_STROKES} strokes, each a list of [x, y] points")
    arrays = [_points(s, i) for i, s in enumerate(strokes)]
    if sum(len(a) for a in arrays) > MAX_POINTS:
        raise DrawingError(f"strokes: more than {MAX_POINTS} points in all")
    if not _is_number(pen) or pen <= 0:
        raise DrawingError("pen: the pen's width, a finite number > 0 in the strokes' unit")
    return arrays, float(pen)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _points(stroke, i: int) -> np.ndarray:
    ok = isinstance(stroke, list) and 0 < len(stroke) <= MAX_POINTS and all(
        isinstance(p, list) and len(p) == 2 and all(_is_number(v) and abs(v) < 1e6 for v in p) for p in stroke)
    if not ok:
        raise DrawingError(f"strokes[{i}]: a list of [x, y] points, each two finite numbers")
    return np.asarray(stroke, np.float64)


def rasterise(strokes: list[np.ndarray], pen: float, long_side: int) -> np.ndarray:
    """Ink coverage of round-pen strokes on a grid whose longer side spans ``long_side`` pixels."""
    points = np.concatenate(strokes)
    radius = pen / 2
    lo = points.min(0) - radius
    scale = long_side / (points.max(0) + radius - lo).max()
    w, h = np.ceil((points.max(0) + radius - lo) * scale).astype(int)  # points are (x, y)
    nearest = np.full((h, w), np.inf)
    for stroke in strokes:
        a, b = _segments(_thinned((stroke - lo) * scale))
        for i in range(0, len(a), CHUNK):
            _nearer(nearest, a[i:i + CHUNK], b[i:i + CHUNK], radius * scale + 1)
    return np.clip(radius * scale + 0.5 - nearest, 0, 1)


def _thinned(points: np.ndarray, step: float = 1.0) -> np.ndarray:
    """One point per ``step`` pixels of path, and the last (pointer events come far denser than pixels)."""
    path = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    first = np.flatnonzero(np.diff(np.floor(path / step), prepend=-1) > 0)
    return points[np.union1d(first, [len(points) - 1])]


def _segments(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive points as segments; a single point is a segment of length 0 (a dot)."""
    return (points[:-1], points[1:]) if len(points) > 1 else (points, points)


def _nearer(nearest: np.ndarray, a: np.ndarray, b: np.ndarray, reach: float) -> None:
    """Lowers ``nearest`` (rows, columns) to each pixel centre's distance from the nearest
    segment a_i-b_i, in the window within ``reach`` of them: only there can the pen's ink fall."""
    (x0, y0), (x1, y1) = np.minimum(a, b).min(0) - reach, np.maximum(a, b).max(0) + reach
    x0, y0 = max(int(x0), 0), max(int(y0), 0)
    x1, y1 = min(int(np.ceil(x1)), nearest.shape[1]), min(int(np.ceil(y1)), nearest.shape[0])
    xs, ys = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    rel = np.stack([xs.ravel(), ys.ravel()], 1)[:, None, :] - a[None]  # (pixels, segments, 2)
    d = b - a
    t = np.clip((rel * d).sum(2) / np.maximum((d * d).sum(1), 1e-12), 0, 1)
    gap = np.sqrt(((rel - t[..., None] * d) ** 2).sum(2)).min(1).reshape(xs.shape)
    np.minimum(nearest[y0:y1, x0:x1], gap, out=nearest[y0:y1, x0:x1])


def normalise_strokes(strokes, pen, style: str) -> np.ndarray:
    """Strokes (lists of [x, y] points) drawn with a round pen of width ``pen`` -> the (16, 16) digit."""
    arrays, pen = check_strokes(strokes, pen)
    return normalise_raster(rasterise(arrays, pen, STYLES[style][0] * FINE), style)


def strokes_of(image, size: float = 280, margin: float = 0.1) -> list[list[list[float]]]:
    """A (16, 16) digit as strokes on a ``size``-pixel pad, to draw a known digit (demos,
    benchmarks, tests): one stroke along each row's run of ink (grey > 0), or a dot."""
    image = np.asarray(image).reshape(SIZE, SIZE)
    cell = size * (1 - 2 * margin) / SIZE
    at = lambda i: round(size * margin + (i + 0.5) * cell, 1)
    strokes = []
    for row, ink in enumerate(image > 0):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], ink.astype(int), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            strokes.append([[at(c), at(row)] for c in dict.fromkeys((start, stop - 1))])
    return strokes
