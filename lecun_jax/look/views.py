"""What the page shows of a digit: the run's own module applied to it, every layer, every seed.

One jitted function, vmapped over the seeds, applies the run's module (its
``apply`` on the trained variables) to one digit and returns each seed's
outputs and the layers it can find:

- values the module exposes to Flax: linen's ``capture_intermediates`` (every
  submodule's output and whatever it ``sow``\\s into ``intermediates``), NNX's
  ``nnx.capture`` (its submodules' outputs and ``nnx.Intermediate`` values);
- for a module with ``layers()`` (Net1989, whose layers are no submodules and
  sow nothing, so that capture finds only its dropout's output), the layers its
  own ``__call__`` applies, in order, walked with the same parameters;
  trusted only while the walk ends on ``apply``'s outputs exactly.

A captured value equal to a walked layer, or to the outputs, is shown once.
"""

from __future__ import annotations

import dataclasses
import importlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lecun_jax.core import modules
from lecun_jax.look import digit

DIGIT_SHAPE = (1, *modules.DIGITS)
MAX_MISTAKES = 400  # thumbnails sent to the page per seed


class LookError(ValueError):
    """A request the views cannot answer; the message is one line."""


class ModelError(ValueError):
    """A run whose module cannot be rebuilt here; the message is one line."""


def module_of(run, model=None):
    """The run's module with linen's ``apply``: ``model`` if given (a user's module), else the run's own."""
    if model is not None:
        return modules.as_module(model)
    try:
        return modules.as_module(run.model)
    except ValueError as e:  # a user's module: rebuilt from its recorded class where that can be imported
        return modules.as_module(_rebuild(getattr(run, "parts", {}).get("model", {}), str(e)))


def _rebuild(recorded: dict, why: str):
    """A user's module from the class and fields its run recorded; its weights are replaced by the run's."""
    path = recorded.get("class", "")
    module_name, _, qualname = path.rpartition(".")
    try:
        cls = importlib.import_module(module_name)
        for name in qualname.split("."):
            cls = getattr(cls, name)
        fields = recorded.get("fields", {})
        return cls(**fields) if issubclass(cls, nn.Module) else cls(rngs=nnx.Rngs(0), **fields)
    except Exception as e:  # anything a user's constructor raises: said in one line
        raise ModelError(f"{why.split(':')[0]}: cannot rebuild {path or 'its module'} here "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); from Python: lecun_jax.look.serve(workdir, model=...)") from None


def _stacked(run) -> tuple[dict, int]:
    """The run's variables, ``apply``'s ``{'params': ..., **state}``, with a leading seed axis, and the seed count."""
    variables = {"params": run.params, **run.model_state}
    seeds = int(run.config.num_seeds)
    if seeds == 1:
        variables = jax.tree.map(lambda a: np.asarray(a)[None], variables)
    return jax.tree.map(jnp.asarray, variables), seeds


def _flat(tree, prefix: str = "") -> dict[str, jax.Array]:
    """Captured values by path: ``a/b/__call__`` -> ``a/b``; a module called twice -> ``a/b#1``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix and key != "__call__" else (prefix or key)
        if isinstance(value, dict):
            out |= _flat(value, name)
        else:
            values = value if isinstance(value, tuple) else (value,)
            out |= {name + (f"#{i}" if i else ""): v for i, v in enumerate(values) if hasattr(v, "shape")}
    return out


def _captured(module, variables, x) -> tuple[jax.Array, dict]:
    """(outputs, captured values) of one network on ``x``, through the module's own apply."""
    if isinstance(module, modules.NNXModule):
        net = module.module(variables)
        net.eval()
        call = (lambda m, v: m(v, train=False)) if modules.takes_train(module.user_class.__call__) else (lambda m, v: m(v))
        outputs, captured = nnx.capture(call, nnx.Intermediate, method_outputs=nnx.Intermediate)(net, x)
        captured = nnx.to_pure_dict(captured)
    else:
        outputs, state = module.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
        captured = state.get("intermediates", {})
    values = _flat(dict(captured))
    values.pop("__call__", None)  # the module's own output: shown as the outputs
    return outputs, values


def _walked(module, params, x) -> dict:
    """The layers ``__call__`` applies (``layers()``), each reshaped to its units' layout (its bias's)."""
    out = {}
    for layer in module.layers():
        x = layer.activation(layer.linear(params[layer.name], x))
        out[layer.name] = x.reshape(x.shape[0], *layer.bias_shape)
    return out


def _forward(module):
    """One network on one digit -> (outputs (10,), captured values, walked layers), batch axis dropped."""
    walks = hasattr(module, "layers")

    def one(variables, x):
        outputs, captured = _captured(module, variables, x)
        walked = _walked(module, variables["params"], x) if walks else {}
        drop = lambda tree: jax.tree.map(lambda a: a[0], tree)
        return outputs[0], drop(captured), drop(walked)

    return one


@dataclasses.dataclass
class Mistakes:
    """The test digits each seed gets wrong, or why there are none to show."""

    images: np.ndarray | None  # (N, 16, 16) test images
    labels: np.ndarray | None
    predicted: np.ndarray | None  # (seeds, N)
    reason: str = ""


def _mistakes(run) -> Mistakes:
    outputs = getattr(run, "test_outputs", None)
    if outputs is None:
        return Mistakes(None, None, None, "the run saved no test outputs")
    try:
        test = run.dataset().test
    except Exception as e:  # the data of a run made elsewhere may be missing here: the page goes on without them
        return Mistakes(None, None, None, f"its test digits cannot be loaded here: {' '.join(str(e).split())[:200]}")
    labels = getattr(run, "test_labels", None)
    if len(test.labels) != outputs.shape[1] or (labels is not None and not np.array_equal(test.labels, labels)):
        return Mistakes(None, None, None, "its test digits here are not those it was tested on")
    return Mistakes(test.images[..., 0], np.asarray(test.labels), np.asarray(outputs).argmax(-1))


class Views:
    """The page's data for one run: built once (compiled and warmed up), then read-only and thread-safe."""

    def __init__(self, run, model=None):
        self.run = run
        self.module = module_of(run, model)
        self.variables, self.seeds = _stacked(run)
        self.style = digit.style_for(run.config.data.name)
        self._apply = jax.jit(jax.vmap(_forward(self.module), in_axes=(0, None)))
        self.layer_names, self._use_walk, self.notes = self._warm_up()
        self.kernel = _first_kernel(self.variables["params"])
        self.mistakes = _mistakes(run)

    def _warm_up(self) -> tuple[list[str], bool, list[str]]:
        """Compiles once; decides which layers to show: the walk where it ends on apply's outputs,
        then the captured values that are neither a walked layer nor the outputs (judged on a
        digit of random grey levels)."""
        x = np.random.default_rng(0).uniform(-1, 1, DIGIT_SHAPE).astype(np.float32)
        outputs, captured, walked = jax.device_get(self._apply(self.variables, x))
        notes = []
        if walked and not np.allclose(walked[list(walked)[-1]].reshape(outputs.shape), outputs, rtol=0, atol=1e-6):
            notes.append("layers() does not end on apply's outputs: its layers are not shown")
            walked = {}
        same = lambda a, b: a.size == b.size and np.allclose(a.reshape(b.shape), b, rtol=0, atol=1e-6)
        extra = [n for n, v in captured.items() if not any(same(v, w) for w in [outputs, *walked.values()])]
        names = [n for n in walked if n != list(walked)[-1]] + extra  # the last walked layer is the outputs
        return names, bool(walked), notes

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Every seed's outputs (seeds, 10) and the shown layers (seeds, ...) for one (16, 16) digit."""
        outputs, captured, walked = jax.device_get(self._apply(self.variables, jnp.asarray(x, jnp.float32).reshape(DIGIT_SHAPE)))
        values = captured | (walked if self._use_walk else {})  # a name in both: the walk's (shown once)
        return np.asarray(outputs), {n: np.asarray(values[n]) for n in self.layer_names}

    def describe(self) -> dict:
        """The run, for the page's header and seed picker."""
        run, m = self.run, self.mistakes
        errors = None if m.predicted is None else [round(100 * float(e), 2) for e in (m.predicted != m.labels).mean(1)]
        return {"workdir": run.workdir.name, "data": run.config.data.name, "style": self.style,
                "model": modules.class_name(self.module), "seeds": self.seeds, "test_error": errors,
                "kernel": self.kernel[0] if self.kernel else None, "notes": self.notes,
                "mistakes": m.reason or None}

    def look(self, request) -> dict:
        """A request (strokes, a 16x16 image or a test digit's index; a seed) -> what the page shows."""
        start = time.perf_counter()
        if not isinstance(request, dict):
            raise LookError("the body must be a JSON object")
        unknown = set(request) - {"strokes", "pen", "image", "test_index", "seed"}
        if unknown:
            raise LookError(f"unknown field(s): {', '.join(sorted(unknown))}")
        seed = self._seed(request.get("seed", 0))
        x = self._digit(request)
        outputs, layers = self.apply(x)
        return self._report(x, outputs, layers, seed) | {"ms": round(1000 * (time.perf_counter() - start), 2)}

    def _seed(self, seed) -> int:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < self.seeds:
            raise LookError(f"seed: a whole number from 0 to {self.seeds - 1}")
        return seed

    def _digit(self, request: dict) -> np.ndarray:
        given = [k for k in ("strokes", "image", "test_index") if k in request]
        if len(given) != 1:
            raise LookError("give one of strokes (with pen), image (16x16 in [-1, 1]) or test_index")
        if "pen" in request and given != ["strokes"]:
            raise LookError("pen goes with strokes")
        try:
            if given == ["strokes"]:
                return digit.normalise_strokes(request["strokes"], request.get("pen"), self.style)
        except digit.DrawingError as e:
            raise LookError(str(e)) from None
        return _image(request["image"]) if given == ["image"] else self._test_digit(request["test_index"])

    def _test_digit(self, index) -> np.ndarray:
        images = self.mistakes.images
        if images is None:
            raise LookError(f"no test digits: {self.mistakes.reason}")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(images):
            raise LookError(f"test_index: a whole number from 0 to {len(images) - 1}")
        return images[index]

    def _report(self, x, outputs, layers, seed: int) -> dict:
        answers = outputs.argmax(1)
        votes = np.bincount(answers, minlength=outputs.shape[1])
        winner = int(votes.argmax())
        return {
            "seed": seed, "input": _list(x), "answer": int(answers[seed]), "scores": _list(outputs[seed]),
            "layers": [{"name": n, "shape": list(v.shape[1:]), "values": _list(v[seed])} for n, v in layers.items()],
            "kernel": None if not self.kernel else {"layer": self.kernel[0], "values": _list(self.kernel[1][seed])},
            "seeds": {"answers": answers.tolist(), "votes": votes.tolist(), "winner": winner,
                      "winner_scores": _list(outputs[:, winner])},
        }

    def mistakes_of(self, seed) -> dict:
        """The test digits ``seed`` gets wrong: index, true label, predicted, grey levels 0-255 (ink 255)."""
        seed, m = self._seed(seed), self.mistakes
        if m.predicted is None:
            return {"seed": seed, "reason": m.reason, "count": None, "digits": []}
        wrong = np.flatnonzero(m.predicted[seed] != m.labels)
        shown = wrong[:MAX_MISTAKES]
        pixels = np.rint((m.images[shown] + 1) * 127.5).clip(0, 255).astype(int).reshape(len(shown), -1)
        return {"seed": seed, "count": len(wrong), "total": len(m.labels), "digits": [
            {"index": int(i), "label": int(m.labels[i]), "predicted": int(m.predicted[seed, i]), "pixels": p.tolist()}
            for i, p in zip(shown, pixels)]}


def _list(a) -> list:
    """An array as JSON lists, each float32 value exactly (float64 holds every float32)."""
    return np.asarray(a, np.float64).tolist()


def _image(image) -> np.ndarray:
    """A 16x16 list of finite grey levels in [-1, 1] -> an array; a LookError otherwise."""
    try:
        x = np.asarray(image, np.float64)
    except (ValueError, TypeError):
        x = None
    if x is None or x.shape != (digit.SIZE, digit.SIZE) or x.dtype.kind not in "fiu":
        raise LookError(f"image: {digit.SIZE} rows of {digit.SIZE} numbers")
    if not np.all(np.isfinite(x)) or np.abs(x).max() > 1:
        raise LookError("image: grey levels must be finite and within [-1, 1]")
    return x.astype(np.float32)


def _first_kernel(params) -> tuple[str, np.ndarray] | None:
    """The first layer's kernels as (seeds, maps, k, k): a 4-D kernel with one input channel,
    in Net1989's (out, in, k, k) layout or linen's and NNX's (k, k, in, out)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        shape = leaf.shape[1:]  # the seed axis first
        name = "/".join(str(getattr(p, "key", p)) for p in path[:-1])
        if getattr(path[-1], "key", None) != "kernel" or len(shape) != 4:
            continue
        if shape[1] == 1 and shape[2] == shape[3]:
            return name, np.asarray(leaf[:, :, 0])
        if shape[2] == 1 and shape[0] == shape[1]:
            return name, np.moveaxis(np.asarray(leaf[:, :, :, 0]), -1, 1)
    return None
