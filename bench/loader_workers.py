"""Images/s of mmjax's training input pipeline against grain's worker_count.

    python bench/loader_workers.py [--workers 0,1,2] [--photos 256] [--short 375] [--batches 24]
                                   [--rounds 3]

The files and the pipeline of bench/input_pipeline.py: --photos JPEG crops of scikit-learn's two
photographs with the shorter side --short (375: the 500x375 of a typical web photo), prepared as an
image_text dataset (stored byte for byte), read with the JPEG bytes undecoded; batches of 64 rows,
each a 224x224 random resized crop (uint8) and 77 byte tokens. worker_count=0 computes the batches
in the main process (one prefetch thread); worker_count=n in n grain worker processes, each batch
in one of them, the same batches in the same order (mmjax.data.batches).

Per worker_count and round: `start s` is the time from creating the iterator to its first batch
(worker processes spawn and import mmjax), then `--batches` batches are timed after 2 x n warm-up
batches (every worker has delivered), with the CPU seconds all processes spent on them (this one
and its workers, from /proc): on a shared machine the wall-clock rate depends on the other load,
the CPU cost per image does not. Rounds alternate over the worker counts and the best round of
each counts; the load average is printed with each round.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from input_pipeline import AREA, BATCH, CONTEXT, SIZE, write_photos  # noqa: E402

from mmjax.data import image_text, pipeline, tokenizers  # noqa: E402


def cpu_seconds() -> float:
  """CPU seconds used so far by this process (all threads) and its live worker processes."""
  total = time.process_time()
  for child in multiprocessing.active_children():
    try:
      fields = pathlib.Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
      pass
  return total


def measure(source, workers: int, batches: int) -> tuple[float, float, float]:
  """(seconds to the first batch, images/s over `batches` batches after the warm-up, CPU seconds
  of all processes per 1,000 of those images)."""
  transform = pipeline.ImageTextTransform(SIZE, tokenizers.ByteTokenizer(CONTEXT), train=True,
                                          keep=(), crop_scale=AREA)
  loader = pipeline.make_loader(source, transform, global_batch_size=BATCH, seed=0,
                                worker_count=workers)
  start = time.perf_counter()
  it = loader.iterate(0)
  try:
    next(it)
    first = time.perf_counter() - start
    for _ in range(2 * workers):
      next(it)
    start, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
      next(it)
    images = batches * BATCH
    return first, images / (time.perf_counter() - start), (cpu_seconds() - cpu) / images * 1000
  finally:
    it.close()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--photos", type=int, default=256)
  parser.add_argument("--short", type=int, default=375)
  parser.add_argument("--batches", type=int, default=24)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  counts = [int(w) for w in args.workers.split(",")]
  print(f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    captions = write_photos(tmp / "photos", args.short, args.photos)
    builder = pipeline.prepare(image_text.ImageText, tmp / "tfds", source=str(captions),
                               max_size=None)
    source = builder.as_data_source(split="train", decoders=pipeline.image_decoders())
    best = {w: (float("inf"), 0.0, float("inf")) for w in counts}
    for r in range(args.rounds):
      for w in counts:
        first, rate, cpu = measure(source, w, args.batches)
        print(f"  round {r + 1}, worker_count={w}: first batch {first:.1f} s, {rate:,.0f} img/s, "
              f"{cpu:.2f} CPU s per 1,000 images; load {os.getloadavg()[0]:.2f}", flush=True)
        best[w] = (min(best[w][0], first), max(best[w][1], rate), min(best[w][2], cpu))
  print(f"load average after: {os.getloadavg()[0]:.2f}")
  base = best[counts[0]][1]
  print(f"\n| worker_count | start s | images/s | x worker_count={counts[0]} | CPU s / 1,000 img |")
  print("|---|---|---|---|---|")
  for w in counts:
    print(f"| {w} | {best[w][0]:.1f} | {best[w][1]:,.0f} | {best[w][1] / base:.2f} | "
          f"{best[w][2]:.2f} |")


if __name__ == "__main__":
  main()
