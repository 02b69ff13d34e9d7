"""Preparing mmjax.data.image_text.ImageText on Apache Beam (Dataflow, Spark, Flink, local runners).

ImageText prepares on Beam when download_and_prepare gets a tfds DownloadConfig with a beam_runner
or beam_options (TFDS's own switch); without one it keeps its single-process path:

    from apache_beam.options.pipeline_options import PipelineOptions
    builder = ImageText(data_dir="gs://bucket/tfds", source="/mnt/laion/{00000..41407}.tar")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        beam_options=PipelineOptions(["--runner=DataflowRunner", "--project=P", ...])))

The records are the ones the single-process path writes (same keys, image bytes, captions and
shards: TFDS's BeamWriter orders examples by the same key hash as its Writer), because each sample
goes through the same readers (image_text_sources.read_source) and the same check and re-encode
(image_files.to_jpeg). Per split the pipeline is

  Create(parts) | Reshuffle | read each part   parts: one per tar shard (read as a stream on the
                                                worker), or the one captions file (rows only)
    | [Reshuffle: captions files]               spreads image paths over the workers
    | decode and re-encode                      -> (uid, example) to TFDS's writer
                                                -> a tally per sample (kept, or skip reason)
  tally | CombineGlobally(_merge_tallies)       counts by reason + the first 10 skips, written as
                                                SKIPS_FILE in the dataset folder being prepared

After the run, ImageText._process_pipeline_result calls record_skips: it moves those files into
the dataset's metadata (builder.skipped, metadata.json) before TFDS writes that and finishes the
dataset. A combine and not Beam metrics: pipeline outputs count each sample once on every runner,
where metrics may be approximate (retried bundles). A split with no usable pair fails the run
(tfds's Beam writer checks it), as it fails the single-process path.

Install with `pip install "mmjax[beam]"` (apache-beam; it caps Pillow, protobuf and pyarrow below
the versions requirements.txt otherwise gets). Workers need mmjax installed (e.g. Dataflow's
--setup_file or a container image) and must see the source under the same local path (shared
storage or a mounted bucket: the readers open local files); data_dir may be any path tfds writes.
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import pathlib
import warnings

from etils import epath
from tensorflow_datasets.core.utils.lazy_imports_utils import apache_beam as beam

# the single-process path's own pieces, so that both write the same records
# pylint: disable-next=protected-access
from mmjax.data.image_files import _Bad, to_jpeg
from mmjax.data.image_text import MAX_EXAMPLES_KEPT, _in_validation, _read_file
from mmjax.data.image_text_sources import Item, Skip, Source, read_source

__all__ = ["wants_beam", "split_transforms", "record_skips", "SKIPS_FILE"]

SKIPS_FILE = "image_text_skips-{split}.json"


def wants_beam(download_config) -> bool:
  """Whether a tfds DownloadConfig (or None) asks for Beam: it has a beam_runner or beam_options."""
  return download_config is not None and any(
      getattr(download_config, name, None) is not None for name in ("beam_runner", "beam_options"))


def _parts(inp: Source) -> list[tuple[int, Source]]:
  """(index, part): one Source per tar shard, indexed by its place in the source (the uid prefix
  the single-process reader gives its samples), or the captions file whole."""
  if inp.kind == "shards":
    return [(i, dataclasses.replace(inp, paths=(path,))) for i, path in enumerate(inp.paths)]
  return [(0, inp)]


def _read_part(part: tuple[int, Source], belongs):
  """((index, n), Item | Skip) for each raw sample of one part that belongs to the split; (index,
  n) is its place in the single-process reading order. A shard's Item uid "0:count" (read alone)
  becomes "index:count", the uid the single-process reader gives it."""
  index, inp = part
  for n, x in enumerate(read_source(inp)):
    if inp.kind == "shards" and isinstance(x, Item):
      x = dataclasses.replace(x, uid=f"{index}:{x.uid.split(':', 1)[1]}")
    if belongs(x.key):
      yield (index, n), x


@dataclasses.dataclass(frozen=True)
class _Belongs:
  """Whether a sample with this key goes to `split` (ImageText._generate_examples's rule): keyless
  skips count in the split that owns them, keys split by hash when validation_fraction > 0."""
  split: str
  fraction: float
  by_hash: bool
  owns_unkeyed: bool

  def __call__(self, key: str | None) -> bool:
    if key is None:
      return self.owns_unkeyed
    if not self.by_hash:
      return True
    return _in_validation(key, self.fraction) == (self.split == "validation")


def _process(element, options):
  """((index, n), Item | Skip) -> (uid, example) on the main output and, on the "tally" output,
  one tally per sample (a _merge_tallies accumulator: (1, {}, {}) or (0, {reason: 1}, {reason:
  [((index, n), where)]})). options: (max_size, jpeg_quality, max_pixels) for to_jpeg."""
  order, x = element
  if isinstance(x, Item):
    try:
      data = _read_file(x.image) if isinstance(x.image, pathlib.Path) else x.image
      with warnings.catch_warnings():  # Pillow's EXIF and size warnings: the counts say enough
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        image = to_jpeg(data, *options)
    except _Bad as e:
      x = Skip(str(e), x.where)
    else:
      yield x.uid, {"image": image, "caption": x.caption, "key": x.key}
      yield beam.pvalue.TaggedOutput("tally", (1, {}, {}))
      return
  where = x.where.encode("utf-8", "backslashreplace").decode("utf-8")  # printable, as in image_text
  yield beam.pvalue.TaggedOutput("tally", (0, {x.reason: 1}, {x.reason: [(tuple(order), where)]}))


def _merge_tallies(tallies) -> tuple[int, dict, dict]:
  """Tallies (kept, {reason: count}, {reason: [(order, where)]}) -> one: the sums, and the first
  MAX_EXAMPLES_KEPT skips per reason in reading order (as the single-process path keeps them).
  Associative, so Beam combines it in parts on the workers."""
  kept, counts, examples = 0, {}, {}
  for k, c, e in tallies:
    kept += k
    for reason, n in c.items():
      counts[reason] = counts.get(reason, 0) + n
    for reason, found in e.items():
      examples[reason] = heapq.nsmallest(MAX_EXAMPLES_KEPT, examples.get(reason, [])
                                         + [(tuple(o), w) for o, w in found])
  return kept, counts, examples


def _tally_json(tally) -> dict:
  kept, counts, examples = tally
  return {"kept": kept, "skipped": counts,
          "skipped_examples": {r: [w for _, w in found] for r, found in examples.items()}}


def _write_tally(tally, path: str):
  """Writes a merged tally as JSON to path (epath: local, gs://, s3://, ...)."""
  epath.Path(path).write_text(json.dumps(_tally_json(tally), sort_keys=True))


def _split_transform(cfg, split: str, inp: Source, owns_unkeyed: bool, skips_path: str):
  """The PTransform (pipeline root -> (uid, example)) that prepares one split."""
  belongs = _Belongs(split, cfg.validation_fraction,
                     cfg.validation_fraction > 0 and cfg.validation_source is None, owns_unkeyed)

  @beam.ptransform_fn
  def prepare(root):
    raw = (root | "Parts" >> beam.Create(_parts(inp)) | "SpreadParts" >> beam.Reshuffle()
           | "Read" >> beam.FlatMap(_read_part, belongs))
    if inp.kind != "shards":  # one reader: spread its image paths before decoding
      raw = raw | "SpreadRows" >> beam.Reshuffle()
    options = (cfg.max_size, cfg.jpeg_quality, cfg.max_pixels)
    out = raw | "Decode" >> beam.FlatMap(_process, options).with_outputs("tally", main="ok")
    _ = (out.tally | "Tally" >> beam.CombineGlobally(_merge_tallies)
         | "WriteTally" >> beam.Map(_write_tally, skips_path))
    return out.ok

  return prepare()  # pylint: disable=no-value-for-parameter


def split_transforms(builder, inputs: dict[str, Source], owns_unkeyed: dict[str, bool]):
  """{split: beam.PTransform} for ImageText._split_generators: its splits, sources and ownership
  of keyless skips (owns_unkeyed), as its single-process generators have them."""
  cfg, folder = builder.builder_config, epath.Path(builder.data_dir)  # the folder being prepared
  return {split: _split_transform(cfg, split, inp, owns_unkeyed[split],
                                  str(folder / SKIPS_FILE.format(split=split)))
          for split, inp in inputs.items()}


def record_skips(builder) -> None:
  """After the Beam run: each split's SKIPS_FILE (from the dataset folder being prepared) into
  builder.info.metadata ("skipped", "skipped_examples") and a summary printed per split; the files
  are removed. (A split with no example has failed the run already: tfds's writer checks it.)"""
  metadata = builder.info.metadata
  for split in builder._inputs():  # pylint: disable=protected-access
    path = epath.Path(builder.data_dir) / SKIPS_FILE.format(split=split)
    tally = json.loads(path.read_text())
    path.unlink()
    metadata.setdefault("skipped", {})[split] = tally["skipped"]
    metadata.setdefault("skipped_examples", {})[split] = tally["skipped_examples"]
    counts = sorted(tally["skipped"].items(), key=lambda rc: (-rc[1], rc[0]))
    summary = ", ".join(f"{r} {n}" for r, n in counts) or "none"
    print(f"{builder.name}/{builder.builder_config.name} {split}: kept {tally['kept']} examples,"
          f" skipped {sum(tally['skipped'].values())} ({summary}) [Beam]")
