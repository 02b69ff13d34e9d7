"""Streaming WebDataset shards vs the prepared TFDS dataset of the same shards: images/s, one core.

    python bench/stream_vs_prepared.py [--images 512] [--sizes 256,512] [--batches 10] [--rounds 3]
                                       [--prepared_max_size 256|none]

Writes img2dataset-style shards (KEY.jpg + KEY.txt + KEY.json, 128 samples each) of crops of
scikit-learn's two photographs (china.jpg, flower.jpg: 640x427), stored with the shorter side at
each of --sizes (JPEG quality 90). For each size it times indexing the shards (ShardSource: tar
headers only) and preparing them with the image_text builder (array_record; max_size
--prepared_max_size, 256 by default as the builder's own; "none" keeps the shards' JPEG bytes as
they are, so both sources hand the transform the same files and only the reading differs), then
the training pipeline over each source: ImageTextTransform (224 px random resized crop, byte
tokens, context 77), global batch 64, worker_count=0, the process pinned to one core, with images
handed over decoded ("arrays") or as JPEG bytes that the transform decodes at reduced size
("bytes": pipeline.image_decoders() for the prepared source, undecoded=True for the shards). The
two sources are timed in alternation, --rounds times each; the table has the medians.
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import pathlib
import statistics
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image

from mmjax.data import image_text, pipeline, tokenizers
from mmjax.data.shards import ShardSource

PER_SHARD = 128


def _photos() -> list[np.ndarray]:
  from sklearn.datasets import load_sample_images  # pylint: disable=import-outside-toplevel
  return list(load_sample_images().images)


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> bytes:
  """A random crop (half to all of the area, aspect 3:4..4:3) resized (bicubic) so the shorter
  side is `size`, as JPEG quality 90."""
  h, w = photo.shape[:2]
  area = h * w * rng.uniform(0.5, 1.0)
  aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
  ch, cw = min(h, round(np.sqrt(area / aspect))), min(w, round(np.sqrt(area * aspect)))
  top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
  image = Image.fromarray(photo[top:top + ch, left:left + cw])
  scale = size / min(ch, cw)
  image = image.resize((round(cw * scale), round(ch * scale)), Image.BICUBIC)
  out = io.BytesIO()
  image.save(out, "JPEG", quality=90)
  return out.getvalue()


def write_shards(folder: pathlib.Path, n: int, size: int, seed: int = 0) -> str:
  """n samples in shards of PER_SHARD; the brace spec of them."""
  folder.mkdir(parents=True)
  photos, rng = _photos(), np.random.default_rng(seed)
  count = -(-n // PER_SHARD)
  for s in range(count):
    with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
      for i in range(s * PER_SHARD, min(n, (s + 1) * PER_SHARD)):
        key = f"{i:09d}"
        members = {"jpg": _crop(photos[i % 2], size, rng),
                   "txt": f"a photograph, crop number {i} of {('china', 'flower')[i % 2]}".encode(),
                   "json": json.dumps({"key": key, "status": "success"}).encode()}
        for ext, data in members.items():
          info = tarfile.TarInfo(f"{key}.{ext}")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
  return str(folder / f"{{00000..{count - 1:05d}}}.tar")


def rate(source, batches: int, batch_size: int = 64) -> float:
  """Images/s of the training pipeline over `source` (after one warm-up batch)."""
  transform = pipeline.ImageTextTransform(224, tokenizers.ByteTokenizer(77), train=True, keep=())
  loader = pipeline.make_loader(source, transform, global_batch_size=batch_size, seed=0)
  it = iter(loader)
  next(it)
  start = time.perf_counter()
  for _ in itertools.islice(it, batches):
    pass
  return batches * batch_size / (time.perf_counter() - start)


def run(tmp: pathlib.Path, images: int, size: int, batches: int, rounds: int,
        prepared_max_size: int | None = 256) -> dict:
  """Indexing and preparation seconds, and the median images/s of both sources at one size, with
  decoded images ('arrays') and with JPEG bytes for the transform's fast path ('bytes')."""
  spec = write_shards(tmp / f"shards{size}", images, size)
  start = time.perf_counter()
  ShardSource(spec, index_dir=tmp / "index", max_size=prepared_max_size)
  out = {"index_s": time.perf_counter() - start}
  start = time.perf_counter()
  builder = pipeline.prepare(image_text.ImageText, tmp / f"tfds{size}", source=spec,
                             max_size=prepared_max_size, num_workers=1)
  out["prepare_s"] = time.perf_counter() - start
  for mode in ("arrays", "bytes"):
    fast = mode == "bytes"
    sources = {
        "stream": ShardSource(spec, index_dir=tmp / "index", max_size=prepared_max_size,
                              undecoded=fast),
        "prepared": builder.as_data_source(
            split="train", decoders=pipeline.image_decoders() if fast else None)}
    got = {k: [] for k in sources}
    for _ in range(rounds):
      for name, source in sources.items():
        got[name].append(rate(source, batches))
    out[mode] = {k: statistics.median(v) for k, v in got.items()}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--sizes", default="256,512")
  parser.add_argument("--batches", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--prepared_max_size", default="256",
                      help="max_size of the prepared copy: pixels, or 'none' (bytes as stored)")
  args = parser.parse_args()
  max_size = None if args.prepared_max_size.lower() == "none" else int(args.prepared_max_size)
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, reader threads included
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for size in map(int, args.sizes.split(",")):
      r = run(pathlib.Path(tmp), args.images, size, args.batches, args.rounds, max_size)
      for mode in ("arrays", "bytes"):
        prepared, stream = r[mode]["prepared"], r[mode]["stream"]
        rows.append(f"| {size} | {args.images} | {r['index_s']:.2f} | {r['prepare_s']:.1f} | "
                    f"{mode} | {prepared:,.0f} | {stream:,.0f} | {stream / prepared:.2f} |")
  print("| stored shorter side | images | index s | prepare s | image as | prepared img/s | "
        "streamed img/s | streamed / prepared |")
  print("|---|---|---|---|---|---|---|---|")
  print("\n".join(rows))

if __name__ == "__main__":
  main()
