"""Batched embedding of a split on a device mesh, with a progress bar.

    for inputs, raw in split_batches(examples, transform, 500, keep=("caption",)): ...
    out, raw = run(fn, variables, split_batches(...), mesh, 500, desc="test", total=len(source))

Every batch is padded to one size (a multiple of the mesh's batch devices), so fn compiles once;
rows are split over ('data', 'fsdp') and the padding is dropped from the results.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence

import grain.python as grain
import jax
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from mmjax import parallel
from mmjax.data import pipeline


def apply_transform(transform, element: dict) -> dict:
  """A grain transform on one example (eval transforms draw no randomness; a fixed rng is given)."""
  if hasattr(transform, "random_map"):
    return transform.random_map(element, np.random.default_rng(0))
  return transform.map(element)


def split_batches(examples: Iterable[dict], transform, batch_size: int, *,
                  keep: Sequence[str] = (), limit: int | None = None
                  ) -> Iterator[tuple[dict, dict]]:
  """(model inputs: the transform's outputs stacked, raw: lists of the `keep` fields) per batch of
  the examples in order, at most `limit` examples."""
  it = iter(examples) if limit is None else itertools.islice(examples, limit)
  while rows := list(itertools.islice(it, batch_size)):
    inputs = [apply_transform(transform, r) for r in rows]
    yield ({k: np.stack([x[k] for x in inputs]) for k in inputs[0]},
           {k: [_decode(r[k]) for r in rows] for k in keep})


def _decode(value):
  return value.decode("utf-8") if isinstance(value, bytes) else value


def source_examples(source) -> Iterator[dict]:
  """source[0], source[1], ... of a random-access source."""
  return (source[i] for i in range(len(source)))


def batch_devices(mesh: Mesh) -> int:
  """Devices the batch is split over: the sizes of the mesh's 'data' and 'fsdp' axes multiplied."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def run(fn: Callable, variables, batches: Iterable[tuple[dict, dict]], mesh: Mesh,
        batch_size: int, *, desc: str | None = None, total: int | None = None,
        quiet: bool = False) -> tuple[dict[str, np.ndarray], dict[str, list]]:
  """Concatenated fn(variables, inputs) -> {name: (B, ...)} over all batches, and the raw fields.

  fn should be jitted (jax.jit(fn) once per model: each call here reuses its compilation).
  total: the number of examples, for the progress bar (None: unknown).
  """
  size = -(-batch_size // batch_devices(mesh)) * batch_devices(mesh)
  outs, raws = [], {}
  with tqdm(total=total, desc=desc, unit="ex", dynamic_ncols=True, leave=False,
            disable=quiet or jax.process_index() != 0) as bar:
    for inputs, raw in batches:
      n = len(next(iter(inputs.values())))
      if n > size:
        raise ValueError(f"a batch of {n} rows is larger than batch_size={batch_size}")
      placed = {k: jax.device_put(_pad(v, size), parallel.batch_sharding(mesh, v.ndim))
                for k, v in inputs.items()}
      outs.append({k: np.asarray(v)[:n] for k, v in fn(variables, placed).items()})
      for k, v in raw.items():
        raws.setdefault(k, []).extend(v)
      bar.update(n)
  if not outs:
    raise ValueError(f"nothing to embed{f' in {desc}' if desc else ''}: the split is empty")
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}, raws


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  """Rows repeated from the first to reach `size` (dropped again after the call)."""
  x = np.asarray(x)
  return x if len(x) == size else np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])


def text_encoder(fn: Callable, variables, mesh: Mesh, batch_size: int, *, desc: str = "prompts",
                 quiet: bool = False) -> Callable[[np.ndarray], np.ndarray]:
  """tokens (N, L) -> (N, E) through fn(variables, {'tokens': ...})['text'] in padded batches."""
  def encode(tokens):
    tokens = np.asarray(tokens)
    batches = (({"tokens": tokens[i:i + batch_size]}, {})
               for i in range(0, len(tokens), batch_size))
    return run(fn, variables, batches, mesh, batch_size, desc=desc, total=len(tokens),
               quiet=quiet)[0]["text"]
  return encode


@dataclasses.dataclass
class ImageTransform(grain.MapTransform):
  """An image classification example -> {'image': (S, S, 3) float32 normalised as for CLIP,
  'label'}. Grey or float images (values in [0, 1]) are made 8-bit RGB first; then resize + crop."""
  image_size: int
  image_key: str = "image"
  label_key: str = "label"

  def map(self, element):
    """{image_key: (H, W[, C]) image, label_key: label} -> {'image': (S, S, 3), 'label'}."""
    image = np.asarray(element[self.image_key])
    if image.dtype != np.uint8:
      image = np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    image = pipeline.resize_center_crop(pipeline.as_rgb(image), self.image_size)
    image = pipeline.normalize(image)
    return {"image": image, "label": np.asarray(element[self.label_key])}
