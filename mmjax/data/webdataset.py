"""The "webdataset" dataset: train straight from img2dataset WebDataset shards, nothing prepared.

    c.dataset = common.dataset("webdataset", image_size=224, eval_splits=(),
                               builder_kwargs=dict(source="/data/cc3m/{00000..00331}.tar"))

WebDataset stands where a TFDS builder stands for train.py and eval.py (pipeline.prepare, then
as_data_source(split)): "train" reads `source`, "validation" reads `validation_source` if given,
each a ShardSource (mmjax.data.shards) over the shards' member-offset indexes. The indexes are
built on first use, beside the shards when their folder is writable, else in index_dir
(default: <data_dir>/shard_index). Elements are those of the image_text builder's prepared source
(read with pipeline.image_decoders(): plain JPEGs as bytes, others decoded; undecoded=False:
all decoded), so the image_text transform serves both.

    python -m mmjax.data.webdataset "/data/laion400m/{00000..41407}.tar" --workers 32

indexes shards ahead of training, in processes (index_all).
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import logging
import multiprocessing as mp
import os
import pathlib

from tqdm import tqdm

from mmjax.data import datasets, image_text
from mmjax.data.image_text_sources import expand_shards
from mmjax.data.shards import MAX_PIXELS, ShardSource, load_index
from mmjax.errors import UserError

__all__ = ["WebDataset", "DATASET", "index_all", "main"]


class WebDataset:
  """A builder-shaped reader of WebDataset shards: data_dir, download_and_prepare (builds the shard
  indexes) and as_data_source(split) -> ShardSource."""

  name = "webdataset"

  def __init__(self, *, data_dir, source=None, validation_source=None, index_dir=None,
               beside: bool = True, max_size: int | None = 256,
               max_pixels: int | None = MAX_PIXELS, num_threads: int | None = None,
               undecoded: bool = True):
    if source is None:
      raise UserError("dataset webdataset needs builder_kwargs.source: tar shards, e.g. "
                      "'/data/cc3m/{00000..00331}.tar'")
    self.data_dir = pathlib.Path(index_dir or pathlib.Path(data_dir) / "shard_index").expanduser()
    self._specs = {"train": source}
    if validation_source is not None:
      self._specs["validation"] = validation_source
    self._options = dict(index_dir=self.data_dir, beside=beside, max_size=max_size,
                         max_pixels=max_pixels, num_threads=num_threads)
    self._undecoded = undecoded
    self._sources: dict[tuple[str, bool], ShardSource] = {}

  def download_and_prepare(self) -> None:
    """Indexes every split's shards (reading tar headers only); nothing is downloaded."""
    self.data_dir.mkdir(parents=True, exist_ok=True)
    for split in self._specs:
      self.as_data_source(split)

  def as_data_source(self, split: str, decoders=None) -> ShardSource:
    """The ShardSource of a split ("train", or "validation" with validation_source); its index
    summary (samples, and what was skipped by reason) is printed once. Plain upright JPEGs come
    as their bytes (ShardSource(undecoded=True): the transform decodes only the crop, at reduced
    scale) unless the builder was made with undecoded=False; decoders naming 'image' (e.g.
    pipeline.image_decoders(), as for a prepared source) ask for the bytes in any case."""
    if split not in self._specs:
      raise UserError(f"dataset webdataset has splits {list(self._specs)}, not {split!r} (give "
                      "builder_kwargs.validation_source for a 'validation' split)")
    undecoded = self._undecoded or (bool(decoders) and "image" in decoders)
    if (split, undecoded) not in self._sources:
      source = ShardSource(self._specs[split], undecoded=undecoded, **self._options)
      if not any(s == split for s, _ in self._sources):
        line = f"webdataset {split}: {source.summary()}"
        print(line, flush=True)
        logging.info(line)
      self._sources[split, undecoded] = source
    return self._sources[split, undecoded]

DATASET = datasets.Dataset("webdataset", builder=lambda: WebDataset,
                           transform=image_text.transform, fields=())
"""Image-caption pairs read from WebDataset shards while training (mmjax.data.datasets)."""


def index_all(spec, *, index_dir=None, beside: bool = True, workers: int | None = None) -> dict:
  """Indexes every shard of spec that has no current index, in `workers` processes (tar header
  parsing is Python: ~2 s per 10,000-sample shard on one core, so threads would not scale);
  returns {reason: count} of what the indexes leave out. Each shard's index is independent: split
  a large set over machines by giving each a part of the spec."""
  try:
    paths = expand_shards(spec)
  except FileNotFoundError as e:
    raise UserError(str(e)) from None
  counts, one = collections.Counter(), functools.partial(_index_one, index_dir=index_dir,
                                                         beside=beside)
  workers = workers or os.cpu_count() or 1
  if workers == 1:
    metas = map(one, paths)
  else:  # spawned, not forked: the parent may have started JAX's threads
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    metas = pool.map(one, paths, chunksize=4)
  try:
    for meta in tqdm(metas, total=len(paths), unit="shard"):
      counts.update(meta["skipped"])
  finally:
    if workers > 1:
      pool.shutdown()
  return dict(counts)


def _index_one(path, index_dir, beside) -> dict:
  return load_index(path, index_dir, beside)[1]


def main(argv=None) -> None:
  """python -m mmjax.data.webdataset SPEC [--index_dir DIR] [--no_beside] [--workers N]: builds
  the shard indexes ahead of training (train.py otherwise builds the missing ones, in threads)."""
  parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
  parser.add_argument("spec", help="shards: a path, glob or brace pattern, e.g. "
                      "'/data/cc3m/{00000..00331}.tar'")
  parser.add_argument("--index_dir", default=None)
  parser.add_argument("--no_beside", action="store_true")
  parser.add_argument("--workers", type=int, default=None)
  args = parser.parse_args(argv)
  counts = index_all(args.spec, index_dir=args.index_dir, beside=not args.no_beside,
                     workers=args.workers)
  print("skipped:", ", ".join(f"{r} {n}" for r, n in sorted(counts.items(), key=lambda x: -x[1]))
        or "none")


if __name__ == "__main__":
  main()
