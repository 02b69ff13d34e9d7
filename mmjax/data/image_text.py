"""ImageText: a TFDS builder for your own image-caption pairs (registered as "mmjax_image_text").

Sources, passed as `source=` (a str, a path, or a list of shard paths):

  captions file   CSV, TSV or JSON lines (UTF-8) whose columns (or keys) name the image path, one
                  of PATH_COLUMNS (path, filepath, image, ...), and the caption, one of
                  CAPTION_COLUMNS (caption, text, title), or as image_column= / caption_column= say.
                  Relative image paths start at the file's folder, or at image_root= if given.
  folder          holding exactly one captions file, or else .tar shards (all of them, sorted).
  tar shards      WebDataset shards as img2dataset writes them (KEY.jpg + KEY.txt + KEY.json): a
                  path, a glob ("cc3m/*.tar"), braces ("cc3m/{00000..00331}.tar", "{a,b}.tar"), or
                  a list of those. The caption is KEY.txt, else json["caption"].

    builder = ImageText(data_dir="~/tensorflow_datasets", source="flickr/captions.csv")
    builder.download_and_prepare()                 # once; no network; later calls reuse the data
    source = builder.as_data_source(split="train")  # array_record, random access
    source[0]  # {'image': (h, w, 3) uint8, 'caption': b'a dog ...', 'key': b'img/1.jpg'}
    builder.skipped  # {'train': {'undecodable_image': 2, 'empty_caption': 1}}

Options (keyword arguments, stored in an ImageTextConfig; or pass config=ImageTextConfig(...)):
  max_size=256            shrink (bicubic) so the shorter side is <= max_size; None keeps the size
  max_pixels=89_478_485   skip larger images (width * height, from the header) before decoding;
                          None: only Pillow's limit, 2 * PIL.Image.MAX_IMAGE_PIXELS (a global)
  jpeg_quality=95         quality of re-encoded images
  validation_fraction=0   put this fraction of images (chosen by a hash of the key, so every caption
                          of one image lands in the same split) in a "validation" split
  validation_source=None  or take "validation" from a second source (any of the forms above)
  image_column, caption_column, image_root   see above
  config_name=None        name of the prepared variant (a folder under data_dir/mmjax_image_text);
                          by default the source's name + a hash of the source path and options.
                          ImageText(data_dir=..., config="NAME") reopens a prepared one.
  num_workers=None        decoding threads (default min(8, cpus)); the output does not change

Features: image (tfds Image, JPEG, (None, None, 3)), caption (Text, stripped), key (Text: the image
path as written in the captions file, or the shard key; captions of one image share it). Images are
decoded fully (truncation is caught), turned upright (EXIF) and made 8-bit RGB by _to_rgb:
transparency over white, 16-bit grey keeps its high byte, 32-bit int and float grey are stretched
from their own min..max, other modes (LAB, ...) are skipped. An upright RGB JPEG small enough is
stored byte for byte, everything else is re-encoded.

Bad samples are skipped, never fatal, and counted by reason (SKIP_REASONS): a summary is printed and
the counts per split (and up to 10 examples each) go to <builder.data_dir>/metadata.json, read back
by builder.skipped. A split with no usable pair is an error. Data is prepared once per config: after
changing the source files, delete builder.data_dir or pass another config_name.

Shards are read as streams, never extracted; only Pillow's common raster formats are decoded (never
EPS and friends). Preparation runs on one host (a few decoding threads), or on Apache Beam when
download_config has a beam_runner or beam_options (mmjax.data.image_text_beam, same records).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import re
import warnings

import tensorflow_datasets as tfds

from mmjax.data import datasets, pipeline
from mmjax.data.image_files import MAX_PIXELS, _Bad, to_jpeg
from mmjax.data.image_text_sources import (MAX_IMAGE_BYTES, Skip, Source, is_shard_spec,
                                           read_source, resolve_source)
# the names users import from here since before the split into two modules
from mmjax.data.image_text_sources import (  # noqa: F401 pylint: disable=unused-import
    CAPTION_COLUMNS, CAPTION_FORMATS, IMAGE_EXTENSIONS, PATH_COLUMNS, SHARD_SUFFIXES, SKIP_REASONS,
    expand_shards)

__all__ = ["ImageText", "ImageTextConfig", "expand_shards", "SKIP_REASONS"]

MAX_EXAMPLES_KEPT = 10


@dataclasses.dataclass(eq=False)
class ImageTextConfig(tfds.core.BuilderConfig):
  """A prepared variant of ImageText; see the module docstring for the fields."""
  source: str | tuple[str, ...] | None = None
  image_root: str | None = None
  image_column: str | None = None
  caption_column: str | None = None
  max_size: int | None = 256
  max_pixels: int | None = MAX_PIXELS
  jpeg_quality: int = 95
  validation_fraction: float = 0.0
  validation_source: str | tuple[str, ...] | None = None
  num_workers: int | None = None


def _absolute(spec):
  """Absolute, user-expanded form of a source spec (a str or a list of str); None stays None."""
  if spec is None:
    return None
  if isinstance(spec, (str, os.PathLike)):
    return os.path.abspath(os.path.expanduser(os.fspath(spec)))
  return tuple(_absolute(s) for s in spec)


def make_config(source=None, *, config_name=None, image_root=None, image_column=None,
                caption_column=None, max_size=256, max_pixels=MAX_PIXELS, jpeg_quality=95,
                validation_fraction=0.0, validation_source=None,
                num_workers=None) -> ImageTextConfig:
  """An ImageTextConfig with checked options and absolute paths, named after the source and options
  unless config_name is given."""
  for name, value in (("max_size", max_size), ("max_pixels", max_pixels)):
    if value is not None and (type(value) is not int or value < 1):  # a bool is no size
      raise ValueError(f"{name} must be a positive int or None, got {value!r}")
  if not 1 <= jpeg_quality <= 100:
    raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality!r}")
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
  if validation_fraction and validation_source is not None:
    raise ValueError("give validation_fraction or validation_source, not both")
  fields = dict(source=_absolute(source), image_root=_absolute(image_root),
                image_column=image_column, caption_column=caption_column, max_size=max_size,
                max_pixels=max_pixels, jpeg_quality=jpeg_quality,
                validation_fraction=float(validation_fraction),
                validation_source=_absolute(validation_source))
  if config_name is None:
    if source is None:
      raise ValueError("ImageText needs source= (a captions file, a folder or tar shards) or the "
                       "config_name of an already prepared dataset")
    first = fields["source"] if isinstance(fields["source"], str) else fields["source"][0]
    stem = pathlib.Path(first).parent.name if is_shard_spec(first) else pathlib.Path(first).stem
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
    config_name = f"{re.sub(r'[^A-Za-z0-9]+', '_', stem).strip('_')[:40] or 'data'}_{digest}"
  if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config_name) or ".." in config_name:
    raise ValueError(f"config_name {config_name!r} must be letters, digits, '_', '.', '-' (it "
                     "names a folder under data_dir)")
  return ImageTextConfig(name=config_name, num_workers=num_workers,
                         description=f"image-caption pairs from {fields['source']}", **fields)


# ----------------------------------------------------------------------------------------------
# Checking and re-encoding one sample

def _read_file(path: pathlib.Path) -> bytes:
  if not path.is_file():
    raise _Bad("missing_image_file")
  try:
    if path.stat().st_size > MAX_IMAGE_BYTES:
      raise _Bad("image_too_large")
    return path.read_bytes()
  except OSError as e:
    raise _Bad("unreadable_image_file") from e


def _ordered_map(fn, items, workers: int):
  """map(fn, items) on a thread pool (Pillow releases the GIL), in order, a bounded window ahead."""
  if workers <= 1:
    yield from map(fn, items)
    return
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    window = collections.deque()
    for item in items:
      window.append(pool.submit(fn, item))
      if len(window) >= 4 * workers:
        yield window.popleft().result()
    while window:
      yield window.popleft().result()


def _in_validation(key: str, fraction: float) -> bool:
  return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") < fraction * 2.0**64


# ----------------------------------------------------------------------------------------------
# The builder

class ImageText(tfds.core.GeneratorBasedBuilder):
  """Image-caption pairs from a captions file + images, or WebDataset tar shards; see the module
  docstring. ImageText(data_dir=..., source=..., max_size=256, ...)."""

  name = "mmjax_image_text"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  def __init__(self, *, source=None, config: str | ImageTextConfig | None = None,
               file_format="array_record", **kwargs):
    """source and the options of make_config (max_size, validation_fraction, ...) as keywords, or
    config=ImageTextConfig(...), or config="NAME" to reopen a prepared dataset; data_dir, version
    go to tfds. Writes array_record files by default (random access for the pipeline)."""
    base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    names = {f.name for f in dataclasses.fields(ImageTextConfig)} - base | {"config_name"}
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    if isinstance(config, str):
      config = make_config(source, **({"config_name": config} | options))
    elif config is None:
      config = make_config(source, **options)
    elif source is not None or options:
      raise ValueError("give either config= or source= and options, not both")
    self._resolved: dict[str, Source] | None = None
    super().__init__(config=config, file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Image-caption pairs prepared from local files (mmjax.data.image_text).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "caption": tfds.features.Text(), "key": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(),
    )

  @property
  def skipped(self) -> dict[str, dict[str, int]]:
    """{split: {reason: count}} from preparation ({} if this builder has not been prepared)."""
    metadata = self.info.metadata
    return dict(metadata.get("skipped", {})) if metadata is not None else {}

  def download_and_prepare(self, **kwargs):
    """tfds's download_and_prepare (nothing is downloaded): the sources are checked before anything
    is written, and the summary says where the skip counts went."""
    prepared = self.data_path.exists()
    if not prepared:
      self._inputs()
    self._download_config = kwargs.get("download_config")  # Beam runner, options: see below
    super().download_and_prepare(**kwargs)
    if not prepared:
      print(f"{self.name}/{self.builder_config.name}: prepared in {self.data_dir}; skip counts in "
            "metadata.json there (builder.skipped)")

  def _inputs(self) -> dict[str, Source]:
    """{split: what it is read from}, resolved and checked once."""
    if self._resolved is None:
      cfg = self.builder_config
      if cfg.source is None:
        raise ValueError(f"{self.name}/{cfg.name} is not prepared under {self.data_dir_root} and "
                         "no source= was given to prepare it from")
      resolve = functools.partial(resolve_source, image_root=cfg.image_root,
                                  image_column=cfg.image_column, caption_column=cfg.caption_column)
      inputs = {"train": resolve(cfg.source)}
      if cfg.validation_source is not None:
        inputs["validation"] = resolve(cfg.validation_source)
      elif cfg.validation_fraction > 0:
        inputs["validation"] = inputs["train"]  # split by a hash of the key
      self._resolved = inputs
    return self._resolved

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    inputs = self._inputs()
    # Skips that have no key (a bad JSON line, a broken shard) count once, in the first split.
    owns = {split: split == "train" or inp is not inputs["train"] for split, inp in inputs.items()}
    from mmjax.data import image_text_beam  # pylint: disable=import-outside-toplevel (a cycle)
    if image_text_beam.wants_beam(getattr(self, "_download_config", None)):  # on Apache Beam
      return image_text_beam.split_transforms(self, inputs, owns)
    return {s: self._generate_examples(s, inp, owns[s]) for s, inp in inputs.items()}

  def _process_pipeline_result(self, pipeline_result):  # after a Beam run: the skip counts
    from mmjax.data import image_text_beam  # pylint: disable=import-outside-toplevel
    image_text_beam.record_skips(self)

  def _generate_examples(self, split: str, inp: Source, owns_unkeyed: bool):
    cfg = self.builder_config
    counts, examples, kept = collections.Counter(), collections.defaultdict(list), 0

    def skip(reason, where):
      # a tar member name that is not UTF-8 holds surrogate escapes: shown as \udcXX, printable
      where = where.encode("utf-8", "backslashreplace").decode("utf-8")
      counts[reason] += 1
      if len(examples[reason]) < MAX_EXAMPLES_KEPT:
        examples[reason].append(where)
        logging.warning("%s %s: skipped %s: %s", self.name, split, where, reason)

    def mine(key):
      if key is None:
        return owns_unkeyed
      if cfg.validation_fraction == 0 or cfg.validation_source is not None:
        return True
      return _in_validation(key, cfg.validation_fraction) == (split == "validation")

    def process(item):
      try:
        data = _read_file(item.image) if isinstance(item.image, pathlib.Path) else item.image
        image = to_jpeg(data, cfg.max_size, cfg.jpeg_quality, cfg.max_pixels)
      except _Bad as e:
        return Skip(str(e), item.where)
      return item.uid, {"image": image, "caption": item.caption, "key": item.key}

    items = (x for x in read_source(inp) if mine(x.key))
    workers = cfg.num_workers or min(8, os.cpu_count() or 1)
    with warnings.catch_warnings():  # Pillow's EXIF and size warnings: the counts say enough
      warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
      for result in _ordered_map(lambda x: x if isinstance(x, Skip) else process(x), items,
                                 workers):
        if isinstance(result, Skip):
          skip(result.reason, result.where)
        else:
          kept += 1
          yield result
    summary = ", ".join(f"{r} {n}" for r, n in counts.most_common()) or "none"
    line = (f"{self.name}/{cfg.name} {split}: kept {kept} examples, skipped {sum(counts.values())}"
            f" ({summary})")
    print(line)
    logging.info(line)
    metadata = self.info.metadata
    metadata.setdefault("skipped", {})[split] = dict(counts)
    metadata.setdefault("skipped_examples", {})[split] = dict(examples)
    if kept == 0:
      raise ValueError(f"{line}: no usable image-caption pair for split {split!r} from "
                       f"{[str(p) for p in inp.paths[:5]]}")


def transform(*, train: bool, image_size: int = 224, tokenizer=None) -> pipeline.ImageTextTransform:
  """Example -> {'image': (S, S, 3) uint8, 'tokens'}: random resized crop (train), OpenCLIP's
  resize + central crop (eval); fastest on a source opened with pipeline.image_decoders()."""
  return pipeline.ImageTextTransform(image_size, tokenizer, train=train, keep=())


DATASET = datasets.Dataset("image_text", builder=lambda: ImageText, transform=transform,
                           fields=(), decoders=pipeline.image_decoders)
"""Your own image-caption pairs for training and evaluation (mmjax.data.datasets): no labels, so
retrieval is what evaluates them (eval.py --tfds adds zero-shot on a labelled dataset)."""
