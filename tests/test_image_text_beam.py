"""ImageText prepared on Apache Beam writes what the single-process path writes.

The same sources (a CSV with images, tar shards, bad samples of every kind) are prepared twice,
once by the single-process generator and once by a Beam pipeline (DirectRunner on two worker
processes), and compared record by record: same splits and shard lengths, same records in the same
order (keys, captions and the exact image bytes), same skip counts and skip examples. The records
are compared parsed, as tf.train.Example protos: the serialized bytes hold the feature map in an
order that depends on the process's hash seed, so not even two single-process runs in two
processes give the same bytes.
"""
import csv
import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mmjax.data import image_text_beam
from mmjax.data.image_text import ImageText
from tests.test_image_text import _encode, _pixels, _tar, _truncated_jpeg

# apache-beam is the optional extra mmjax[beam], not in requirements-dev.txt (it caps Pillow below
# 13, which reads fewer TIFF modes): a CI job that installs it sets MMJAX_REQUIRE_BEAM=1.
if not os.environ.get("MMJAX_REQUIRE_BEAM"):
  pytest.importorskip("apache_beam", reason="apache-beam is the optional extra mmjax[beam]")
import apache_beam as beam  # noqa: E402  pylint: disable=wrong-import-position
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position


def _beam_config(processes: bool):
  """Two worker processes (as a cluster would run it), or the in-process runner (faster)."""
  if processes:
    return tfds.download.DownloadConfig(beam_options=PipelineOptions(
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]))
  return tfds.download.DownloadConfig(beam_runner=beam.runners.DirectRunner(),
                                      beam_options=PipelineOptions([]))  # not pytest's argv


def _prepared(data_dir, config=None, **options):
  """A builder prepared from options, by the single-process path (config None) or on Beam."""
  builder = ImageText(data_dir=data_dir, **options)
  builder.download_and_prepare(**({} if config is None else {"download_config": config}))
  return builder


def _records(builder) -> dict[str, list]:
  """{split: [tf.train.Example of each record, in file order]}."""
  from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=import-outside-toplevel
  out = {}
  for split, info in builder.info.splits.items():
    files = sorted(pathlib.Path(builder.data_dir).glob(f"*-{split}.array_record-*"))
    assert len(files) == len(info.shard_lengths)
    out[split] = [tf.train.Example.FromString(r) for f in files
                  for r in ArrayRecordReader(str(f)).read_all()]
  return out


def _assert_same(single, beamed):
  assert not list(pathlib.Path(beamed.data_dir).glob("image_text_skips*"))  # moved to metadata
  assert {s: i.shard_lengths for s, i in beamed.info.splits.items()} == {
      s: i.shard_lengths for s, i in single.info.splits.items()}
  want, got = _records(single), _records(beamed)
  assert got.keys() == want.keys()
  for split in want:
    assert got[split] == want[split], split  # protos: equal whatever the map order
  assert beamed.skipped == single.skipped
  meta = lambda b: json.loads((pathlib.Path(b.data_dir) / "metadata.json").read_text())  # noqa: E731
  assert meta(beamed) == meta(single)
  # A reopened builder reads the Beam-prepared variant as any other.
  again = ImageText(data_dir=beamed.data_dir_root, config=beamed.builder_config.name)
  assert again.skipped == single.skipped


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """A CSV with images (good ones and every file-level fault) and three tar shards (the third
  cut short); returns (csv path, shard pattern, folder)."""
  root = tmp_path_factory.mktemp("beam_sources")
  rows = [("filepath", "caption")]
  for i in range(6):
    (root / f"{i}.jpg").write_bytes(_encode(_pixels(10 + i, 12, i)))
    rows += [(f"{i}.jpg", f"image {i}"), (f"{i}.jpg", f"image {i} again")]
  big = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
  (root / "big.png").write_bytes(_encode(big, "PNG"))  # re-encoded and shrunk
  (root / "bad.jpg").write_bytes(b"not an image")
  (root / "trunc.jpg").write_bytes(_truncated_jpeg())
  rows += [("big.png", "a big png"), ("bad.jpg", "bad"), ("trunc.jpg", "cut"),
           ("gone.jpg", "missing"), ("1.jpg", "  "), ("", "no path")]
  with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows(rows)
  for s in range(2):
    members = []
    for i in range(4):
      key = f"{s:05d}{i:04d}"
      members += [(f"{key}.jpg", _encode(_pixels(8 + i, 9, 10 * s + i))),
                  (f"{key}.txt", f"shard {s} sample {i}".encode())]
    members += [(f"{s:05d}0100.jpg", b"junk"), (f"{s:05d}0100.txt", b"junk"),
                (f"{s:05d}0101.jpg", _encode(_pixels(8, 8, 0))),  # no caption
                (f"../{s:05d}0102.jpg", _encode(_pixels(8, 8, 0))),
                (f"{s:05d}0103.jpg", ("symlink", "/etc/passwd"))]
    _tar(root / f"{s:05d}.tar", members)
  (root / "00002.tar").write_bytes((root / "00000.tar").read_bytes()[:3000])
  return root / "captions.csv", str(root / "*.tar"), root


def test_beam_on_two_processes_writes_the_same_records(sources, tmp_path, capsys):
  """A CSV for train and the shards for validation: both source kinds and two splits, one run."""
  captions, shards, _ = sources
  options = dict(source=captions, validation_source=shards, max_size=16)
  single = _prepared(tmp_path / "single", **options)
  beamed = _prepared(tmp_path / "beam", _beam_config(processes=True), **options)
  _assert_same(single, beamed)
  assert beamed.info.splits["train"].num_examples == 13
  assert beamed.skipped == {
      "train": {"undecodable_image": 2, "missing_image_file": 1, "empty_caption": 1,
                "missing_image": 1},
      "validation": {"undecodable_image": 2, "missing_caption": 2, "unsafe_member": 2,
                     "non_regular_member": 2, "bad_shard": 1}}
  assert "validation: kept 8 examples, skipped 9 (" in capsys.readouterr().out


def test_beam_validation_fraction(sources, tmp_path):
  """Shards split by a hash of the key; keyless skips (a broken shard) count in train only."""
  options = dict(source=sources[1], validation_fraction=0.4)
  single = _prepared(tmp_path / "single", **options)
  beamed = _prepared(tmp_path / "beam", _beam_config(processes=False), **options)
  _assert_same(single, beamed)
  assert set(beamed.skipped) == {"train", "validation"} and beamed.skipped["train"]["bad_shard"] == 1
  assert "bad_shard" not in beamed.skipped["validation"]


def test_beam_split_without_a_usable_pair_is_an_error(sources, tmp_path):
  root = sources[2]
  bad = tmp_path / "bad.csv"
  bad.write_text(f"path,caption\n{root / 'bad.jpg'},bad\n{root / 'gone.jpg'},gone\n")
  builder = ImageText(data_dir=tmp_path, source=bad)
  with pytest.raises(ValueError, match="generated examples is 0 for split train"):  # tfds's check
    builder.download_and_prepare(download_config=_beam_config(processes=False))
  assert not builder.data_path.exists()  # nothing half-prepared is left to be reused


def test_wants_beam():
  assert not image_text_beam.wants_beam(None)
  assert not image_text_beam.wants_beam(tfds.download.DownloadConfig())
  assert image_text_beam.wants_beam(tfds.download.DownloadConfig(beam_options=PipelineOptions([])))
  assert image_text_beam.wants_beam(
      tfds.download.DownloadConfig(beam_runner=beam.runners.DirectRunner()))
