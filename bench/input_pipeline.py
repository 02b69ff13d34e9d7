"""Input pipeline throughput on one CPU core: mmjax's training pipeline against plain tf.data.

    python bench/input_pipeline.py [--sizes 256,427,640,1024] [--photos 32] [--batches 20]
                                   [--rounds 3] [--core 0] [--prepare]

Real photographs (scikit-learn's china.jpg and flower.jpg, 427x640): --photos crops of them (random
position, aspect 2:3 to 1:1), rescaled so the shorter side is each of --sizes, stored as JPEG
(quality 90) with a captions.csv, and prepared as an mmjax image_text dataset (max_size=None: the
files are stored byte for byte). Both pipelines shuffle 4,096 records: the files, repeated. Both pipelines then make batches of 64: a 224x224 random resized
crop (area 0.9-1.0, aspect 3/4-4/3) as uint8, and byte tokens (77).

  mmjax    the array_record source with the JPEG bytes undecoded (pipeline.image_decoders()),
           ImageTextTransform (crop window from the header, reduced-size decode, one bicubic
           resize), grain with worker_count=0
  tf.data  read_file + sample_distorted_bounding_box + decode_and_crop_jpeg + bilinear resize,
           sequential map, private thread pool of 1, intra-op parallelism 1

The process is pinned to one core (--core), so both use one core. Rounds alternate the pipelines
and the best round of each counts. Rates are given per wall second and per CPU second of the
process (time.process_time, all its threads): on a shared machine the second is the steadier.
--prepare adds the preparation times of the embedded shapes and digits datasets.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from mmjax.data import digits, image_text, pipeline, shapes, tokenizers

BATCH, SIZE, CONTEXT = 64, 224, 77
AREA, RATIO = (0.9, 1.0), (3 / 4, 4 / 3)
RECORDS = 4096  # records per epoch for both pipelines: the --photos files, repeated


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def _rates(it, batches: int) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process) over `batches` batches."""
  cpu = time.process_time()
  _, seconds = _timed(lambda: list(itertools.islice(it, batches)))
  return batches * BATCH / seconds, batches * BATCH / (time.process_time() - cpu)


def write_photos(folder: pathlib.Path, short: int, count: int, seed: int = 0) -> pathlib.Path:
  """count JPEGs cut from scikit-learn's two photos, shorter side `short`; returns captions.csv."""
  from sklearn.datasets import load_sample_images  # pylint: disable=import-outside-toplevel
  photos = load_sample_images().images
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  rows = [("path", "caption")]
  for i in range(count):
    photo = photos[i % len(photos)]
    h, w = photo.shape[:2]
    ch = int(h * rng.uniform(0.7, 1.0))
    cw = min(w, int(ch * rng.uniform(1.0, 1.5)))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = Image.fromarray(photo[top:top + ch, left:left + cw])
    scale = short / min(crop.size)
    crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BICUBIC)
    crop.save(folder / f"{i:04d}.jpg", quality=90)
    rows.append((f"{i:04d}.jpg", f"photo {i} of a {['temple', 'flower'][i % 2]}, {short} px"))
  with open(folder / "captions.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return folder / "captions.csv"


class Repeated:
  """A source's records repeated to `length` (record i is source[i % len(source)]): a realistic
  index space for grain's sampler, whose shuffle costs ~1 ms per record over 16 records, 0.28 ms
  over 64 and 0.02-0.04 ms over 1,000 or more (measured)."""

  def __init__(self, source, length: int):
    self._source, self._length = source, length

  def __repr__(self) -> str:
    return f"Repeated({self._source!r}, {self._length})"

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int):
    return self._source[index % len(self._source)]


def mmjax_rate(source, batches: int) -> tuple[float, float]:
  """(wall, CPU) images/s of mmjax's training pipeline over `source` (worker_count=0)."""
  transform = pipeline.ImageTextTransform(SIZE, tokenizers.ByteTokenizer(CONTEXT), train=True,
                                          keep=(), crop_scale=AREA)
  loader = pipeline.make_loader(source, transform, global_batch_size=BATCH, seed=0)
  it = iter(loader)
  next(it)  # warm-up
  return _rates(it, batches)


def tfdata_rate(captions_csv: pathlib.Path, batches: int) -> tuple[float, float]:
  """(wall, CPU) images/s of a plain tf.data pipeline on one thread over the same files."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  with open(captions_csv, newline="") as f:
    rows = list(csv.DictReader(f))
  paths = [str(captions_csv.parent / r["path"]) for r in rows] * (RECORDS // len(rows))
  captions = [r["caption"] for r in rows] * (RECORDS // len(rows))

  def load(path, caption):
    data = tf.io.read_file(path)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.io.extract_jpeg_shape(data), tf.zeros((1, 0, 4)), area_range=AREA,
        aspect_ratio_range=RATIO, max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(data, window, channels=3)
    image = tf.cast(tf.clip_by_value(tf.image.resize(image, (SIZE, SIZE)), 0, 255), tf.uint8)
    ids = tf.cast(tf.io.decode_raw(caption, tf.uint8), tf.int32)[:CONTEXT - 2] + 1
    ids = tf.concat([[257], ids, [258]], 0)
    return {"image": image, "tokens": tf.pad(ids, [[0, CONTEXT - tf.shape(ids)[0]]])}

  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False
  ds = (tf.data.Dataset.from_tensor_slices((paths, captions)).shuffle(len(paths), seed=0)
        .repeat().map(load).batch(BATCH, drop_remainder=True).with_options(options))
  it = iter(ds.as_numpy_iterator())
  next(it)  # warm-up
  return _rates(it, batches)


def decode_floor_ms(captions_csv: pathlib.Path, rounds: int = 3) -> float:
  """CPU ms per image of decoding the stored JPEGs at libjpeg-turbo's smallest DCT scale (1/8,
  simplejpeg): the entropy decoding of the whole file, which no DCT scaling skips, and little else.
  No pipeline that decodes the whole file with libjpeg-turbo costs less per image."""
  import simplejpeg  # pylint: disable=import-outside-toplevel
  with open(captions_csv, newline="") as f:
    files = [(captions_csv.parent / r["path"]).read_bytes() for r in csv.DictReader(f)]
  shapes_ = [simplejpeg.decode_jpeg_header(data)[:2] for data in files]
  best = float("inf")
  for _ in range(rounds):  # this thread's CPU time: the tf.data iterators' threads may still run
    cpu = time.thread_time()
    for data, (h, w) in zip(files, shapes_):
      simplejpeg.decode_jpeg(data, "RGB", min_height=-(-h // 8), min_width=-(-w // 8))
    best = min(best, (time.thread_time() - cpu) / len(files) * 1e3)
  return best


def speed_table(tmp: pathlib.Path, sizes, photos: int, batches: int, rounds: int) -> list[tuple]:
  """[(shorter side, tf.data (wall, CPU) img/s, mmjax (wall, CPU) img/s, decode floor ms)], the
  rates each the best of `rounds` alternating rounds."""
  results = []
  for short in sizes:
    captions = write_photos(tmp / f"photos_{short}", short, photos)
    builder = pipeline.prepare(image_text.ImageText, tmp / "tfds", source=str(captions),
                               max_size=None)
    source = Repeated(builder.as_data_source(split="train", decoders=pipeline.image_decoders()),
                      RECORDS)
    tf_best = mm_best = (0.0, 0.0)
    for _ in range(rounds):
      tf_best = tuple(map(max, tf_best, tfdata_rate(captions, batches)))
      mm_best = tuple(map(max, mm_best, mmjax_rate(source, batches)))
    results.append((short, tf_best, mm_best, decode_floor_ms(captions)))
    print(f"  {short} px: tf.data {tf_best[0]:,.0f} img/s ({tf_best[1]:,.0f} per CPU s), mmjax "
          f"{mm_best[0]:,.0f} img/s ({mm_best[1]:,.0f} per CPU s)", flush=True)
  return results


def prepare_table(tmp: pathlib.Path) -> None:
  """Preparation times of the embedded datasets (shapes, digits), one row each."""
  _, t_shapes = _timed(lambda: pipeline.prepare(shapes.Shapes, tmp / "tfds_embedded"))
  _, t_digits = _timed(lambda: pipeline.prepare(digits.DigitsTwoView, tmp / "tfds_embedded"))
  print("\n| dataset | prepare s | examples |\n|---|---|---|")
  print(f"| shapes (64x64) | {t_shapes:.1f} | 24,000 |")
  print(f"| digits_two_view (28x28) | {t_digits:.1f} | 1,797 |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="256,427,640,1024")
  parser.add_argument("--photos", type=int, default=32)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--core", type=int, default=0)
  parser.add_argument("--prepare", action="store_true")
  args = parser.parse_args()
  os.sched_setaffinity(0, {args.core})
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    rows = speed_table(tmp, [int(s) for s in args.sizes.split(",")], args.photos, args.batches,
                       args.rounds)
    print("\n| shorter side | tf.data img/s | mmjax img/s | ratio | tf.data img/CPU-s | "
          "mmjax img/CPU-s | ratio (CPU) | 1/8-scale decode ms | ratio ceiling |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for short, (tf_wall, tf_cpu), (mm_wall, mm_cpu), floor in rows:
      # ceiling: tf.data's CPU ms per image over the floor, the ratio of a pipeline doing nothing
      # but the entropy decoding
      print(f"| {short} | {tf_wall:,.0f} | {mm_wall:,.0f} | {mm_wall / tf_wall:.2f}x | "
            f"{tf_cpu:,.0f} | {mm_cpu:,.0f} | {mm_cpu / tf_cpu:.2f}x | {floor:.2f} | "
            f"{1e3 / tf_cpu / floor:.2f}x |")
    if args.prepare:
      prepare_table(tmp)


if __name__ == "__main__":
  main()
