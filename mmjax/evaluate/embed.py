"""Batched embedding on a device mesh: a split read through the grain loader, or rows in memory.

    out = embed_source(fn, variables, source, transform, mesh, 500, desc="test")
    out = embed_rows(fn, variables, {"tokens": tokens}, mesh, 500)          # e.g. prompts
    out, raw = run(fn, variables, split_batches(examples, transform, 500), mesh, 500)

embed_source reads a random-access source (a prepared TFDS split, array_record) through
mmjax.data.pipeline's grain loader, as training does: records are read in parallel, each process
reads only its slice of every global batch, the batch is a global array split over ('data',
'fsdp'), and the outputs are gathered back to every process in record order, so several processes
give the same result as one. Every batch has one size (the source is padded with copies of record 0,
dropped afterwards), so fn compiles once. run / split_batches embed any iterable of examples (e.g. a
tf.data TFDS split) on one process.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import grain.python as grain
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from mmjax import parallel
from mmjax.data import pipeline


class Interrupted(Exception):
  """Raised between batches when the caller's should_stop() turns true (e.g. a SIGTERM)."""


def apply_transform(transform, element: dict) -> dict:
  """A grain transform on one example (eval transforms draw no randomness; a fixed rng is given)."""
  if hasattr(transform, "random_map"):
    return transform.random_map(element, np.random.default_rng(0))
  return transform.map(element)


def batch_devices(mesh: Mesh) -> int:
  """Devices the batch is split over: the sizes of the mesh's 'data' and 'fsdp' axes multiplied."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def global_batch_size(mesh: Mesh, batch_size: int, rows: int | None = None) -> int:
  """batch_size rounded up to a multiple of the batch devices and the process count (every
  device and every process gets whole rows), and no larger than needed for `rows` rows."""
  unit = math.lcm(batch_devices(mesh), jax.process_count())
  size = -(-batch_size // unit) * unit
  return size if rows is None else min(size, -(-rows // unit) * unit)


def to_host(x: jax.Array) -> np.ndarray:
  """A global array as numpy on every process (gathered across processes when it spans several)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _bar(total, desc, quiet):
  return tqdm(total=total, desc=desc, unit="ex", dynamic_ncols=True, leave=False,
              disable=quiet or jax.process_index() != 0)


def embed_source(fn: Callable, variables, source, transform, mesh: Mesh, batch_size: int, *,
                 limit: int | None = None, worker_count: int = 0, desc: str | None = None,
                 quiet: bool = False, should_stop: Callable[[], bool] | None = None
                 ) -> dict[str, np.ndarray]:
  """fn(variables, batch) -> {name: (B, ...)} over source[0 .. n-1] (n = len(source), at most
  limit), concatenated in record order, with the transform's per-record scalars kept too (e.g.
  'label'): {name: (n, ...) numpy}, the same on every process.

  fn should be jitted once per model: each call here reuses its compilation. should_stop() is
  asked before every batch; when it says True, Interrupted is raised.
  """
  n = len(source) if limit is None else min(limit, len(source))
  if n <= 0:
    raise ValueError(f"nothing to embed{f' in {desc}' if desc else ''}: the split is empty")
  size = global_batch_size(mesh, batch_size, n)
  padded = pipeline.PaddedSource(source, n, -(-n // size) * size)
  loader = pipeline.make_loader(padded, transform, global_batch_size=size, seed=0, shuffle=False,
                                num_epochs=1, worker_count=worker_count)
  outs = []
  with _bar(n, desc, quiet) as bar:
    for host_batch in loader:
      if should_stop is not None and should_stop():
        raise Interrupted(f"stopped while embedding {desc or 'a split'}")
      batch = pipeline.to_global(host_batch, mesh)
      scalars = {k: v for k, v in batch.items() if v.ndim == 1}
      out = {**scalars, **fn(variables, batch)}
      outs.append({k: to_host(v) for k, v in out.items()})
      bar.update(min(size, n - bar.n))
  return {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}


def place_rows(rows: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host arrays that every process holds whole -> global arrays split over the batch axes."""
  out = {}
  for key, value in rows.items():
    value = np.asarray(value)
    sharding = parallel.batch_sharding(mesh, value.ndim)
    out[key] = jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
  return out


def embed_rows(fn: Callable, variables, inputs: dict[str, np.ndarray], mesh: Mesh,
               batch_size: int, *, desc: str | None = None, quiet: bool = False
               ) -> dict[str, np.ndarray]:
  """fn(variables, batch) over in-memory rows (every process holding the same ones) in padded
  batches of one size: {name: (N, ...) numpy}."""
  n = len(next(iter(inputs.values())))
  size = global_batch_size(mesh, batch_size, n)
  outs = []
  with _bar(n, desc, quiet) as bar:
    for start in range(0, n, size):
      rows = {k: _pad(np.asarray(v)[start:start + size], size) for k, v in inputs.items()}
      outs.append({k: to_host(v)[:min(size, n - start)]
                   for k, v in fn(variables, place_rows(rows, mesh)).items()})
      bar.update(min(size, n - start))
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def split_batches(examples: Iterable[dict], transform, batch_size: int, *,
                  keep: Sequence[str] = (), limit: int | None = None
                  ) -> Iterator[tuple[dict, dict]]:
  """(model inputs: the transform's outputs stacked, raw: lists of the `keep` fields) per batch of
  the examples in order, at most `limit` examples (for iterables that are not random-access)."""
  it = iter(examples) if limit is None else itertools.islice(examples, limit)
  while rows := list(itertools.islice(it, batch_size)):
    inputs = [apply_transform(transform, r) for r in rows]
    yield ({k: np.stack([x[k] for x in inputs]) for k in inputs[0]},
           {k: [_decode(r[k]) for r in rows] for k in keep})


def _decode(value):
  return value.decode("utf-8") if isinstance(value, bytes) else value


def run(fn: Callable, variables, batches: Iterable[tuple[dict, dict]], mesh: Mesh,
        batch_size: int, *, desc: str | None = None, total: int | None = None,
        quiet: bool = False) -> tuple[dict[str, np.ndarray], dict[str, list]]:
  """Concatenated fn(variables, inputs) -> {name: (B, ...)} over all batches of host rows, and the
  raw fields. One process: for several, read through embed_source.

  total: the number of examples, for the progress bar (None: unknown).
  """
  size = global_batch_size(mesh, batch_size)
  outs, raws = [], {}
  with _bar(total, desc, quiet) as bar:
    for inputs, raw in batches:
      n = len(next(iter(inputs.values())))
      if n > size:
        raise ValueError(f"a batch of {n} rows is larger than batch_size={batch_size}")
      placed = place_rows({k: _pad(v, size) for k, v in inputs.items()}, mesh)
      outs.append({k: to_host(v)[:n] for k, v in fn(variables, placed).items()})
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
