"""Host batches as one random-access sequence of whole batches, iterated by grain with optional
worker processes (mmjax.data.pipeline.make_loader builds it; BatchIterator walks it).

Why whole batches: grain's worker processes (mp_prefetch) slice a pipeline after its last
MapDataset step. grain's DataLoader batches after that slice, so each worker batches its own
records and the batches change with worker_count. Here element k is already batch k: worker i
computes batches i, i + n, ... and the main process interleaves them in order, so the batches are
the same for every worker_count, and the iterator position (batches taken) is one integer that any
worker_count resumes.
"""
from __future__ import annotations

import concurrent.futures
import sys

import grain.python as grain
import jax
import numpy as np
from absl import flags


def batch_count(total: int | None, global_batch: int, local: int, process: int,
                drop_remainder: bool) -> int:
  """Host batches of this process in a stream of `total` records (None: endless)."""
  if total is None:
    return sys.maxsize
  full, rest = divmod(total, global_batch)
  return full + int(not drop_remainder and rest > process * local)


class HostBatches:
  """This process's host batches in order: element k holds its rows of global batch k, read by
  `sampler` (a pipeline.GlobalBatchSampler) from `source` and transformed record by record with
  the rng the sampler keys by global position. Picklable when the source and transforms are."""

  def __init__(self, source, sampler, transforms, batch_size: int,
               num_batches: int, worker_count: int, read_threads: int):
    self._source, self._sampler, self._transforms = source, sampler, tuple(transforms)
    self.batch_size, self.num_batches = batch_size, num_batches
    self.worker_count, self._threads, self._pool = worker_count, read_threads, None

  def __getstate__(self):
    """Pickled for grain's worker processes, without the read threads (made again there)."""
    return {**self.__dict__, "_pool": None}

  def __len__(self) -> int:
    return self.num_batches

  def __getitem__(self, k: int) -> dict:
    """Batch k: records read (in threads) and transformed in order, stacked: {key: (b, ...)}."""
    metas = []
    for i in range(k * self.batch_size, (k + 1) * self.batch_size):
      try:
        metas.append(self._sampler[i])
      except IndexError:  # past the last epoch: a partial last batch (drop_remainder=False)
        break
    keys = [m.record_key for m in metas]
    if self._threads:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self._threads, "mmjax-read")
      records = list(self._pool.map(self._source.__getitem__, keys))
    else:
      records = [self._source[key] for key in keys]
    rows = [self._transform(r, m.rng) for r, m in zip(records, metas)]
    return jax.tree.map(lambda *xs: np.stack(xs), *rows)

  def _transform(self, element, rng: np.random.Generator):
    for t in self._transforms:
      element = t.random_map(element, rng) if isinstance(t, grain.RandomMapTransform) else t.map(
          element)
    return element

  def __iter__(self):
    return self.iterate(0)

  def iterate(self, start: int = 0):
    """A grain iterator over batches start, start + 1, ... (close() it to stop the workers)."""
    ds = grain.MapDataset.source(self)[start:]
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    if self.worker_count:
      if not flags.FLAGS.is_parsed():  # grain 0.2.18 reads an absl flag in mp_prefetch
        flags.FLAGS.mark_as_parsed()   # (google/grain#1355): its default then, as after app.run
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count))
    return iter(ds)

  def state(self, position: int) -> dict:
    """The position in grain DataLoader's state format for worker_count=0 (the records taken and
    what grain compares on restore), whatever this loader's worker_count: one stream for all."""
    source = self._source
    kind = isinstance(source, (list, tuple, np.ndarray))
    return {"version": 2, "last_seen_indices": {"0": position * self.batch_size - 1},
            "last_worker_index": -1, "worker_count": 0, "sampler": repr(self._sampler),
            "data_source": str(type(source)) if kind else repr(source)}

  def position(self, state: dict) -> int:
    """The batch position of a state(); a ValueError naming what does not match this loader."""
    now = self.state(0)
    for key in ("sampler", "data_source", "worker_count"):
      if state.get(key) != now[key]:
        raise ValueError(f"the iterator state has {key} {state.get(key)!r}, this loader "
                         f"{now[key]!r}" + (" (a grain DataLoader with worker processes, whose "
                         "batches depended on the worker count)" if key == "worker_count" else ""))
    taken = int(state["last_seen_indices"]["0"]) + 1
    if taken % self.batch_size:
      raise ValueError(f"the iterator state is at record {taken}, not at a batch boundary of "
                       f"{self.batch_size}")
    return taken // self.batch_size
