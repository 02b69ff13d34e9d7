"""ImageText builder: captions files (CSV, TSV, JSONL) and WebDataset shards, with bad samples.

Every good pair must arrive (caption exact, pixels close to what was written, as JPEG allows) and
every bad one must be counted under the right reason; shard names that climb out of the folder must
not reach the disk; missing paths and unknown columns must be errors that name them.
"""
import csv
import io
import json
import os
import pathlib
import pickle
import tarfile
import uuid

import numpy as np
import pytest
from PIL import Image

from mmjax.data import image_text, image_text_sources
from mmjax.data.image_text import ImageText, expand_shards


def _pixels(h, w, seed):
  """A smooth (h, w, 3) uint8 image: JPEG keeps it within a few levels."""
  y, x = np.mgrid[0:h, 0:w]
  rng = np.random.default_rng(seed)
  base = rng.integers(40, 200, size=3)
  return np.stack([base[0] + 3 * x, base[1] + 3 * y, np.full_like(x, base[2])], -1).astype(np.uint8)


def _encode(pixels, fmt="JPEG", **kw):
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}) | kw)
  return out.getvalue()


def _truncated_jpeg():
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  data = _encode(noise)
  return data[:len(data) * 3 // 5]


def _examples(builder, split="train"):
  """{(key, caption): (h, w, 3) uint8} of a prepared split."""
  source = builder.as_data_source(split=split)
  out = {}
  for i in range(len(source)):
    ex = source[i]
    out[(ex["key"].decode(), ex["caption"].decode())] = ex["image"]
  assert len(out) == len(source)
  return out


def _close(got, want, tol=6.0):
  assert got.shape == want.shape, (got.shape, want.shape)
  assert np.abs(got.astype(float) - want.astype(float)).mean() < tol


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """Images and the rows (path, caption) of a captions file; `expected` are the good ones."""
  root = tmp_path_factory.mktemp("folder")
  (root / "img" / "sub").mkdir(parents=True)
  a, b, big = _pixels(12, 16, 0), _pixels(16, 10, 1), _pixels(40, 64, 2)
  rgba = np.dstack([_pixels(10, 10, 3), np.full((10, 10), 255, np.uint8)])
  (root / "img" / "a.jpg").write_bytes(_encode(a))
  (root / "img" / "sub" / "b.jpg").write_bytes(_encode(b))
  (root / "c.png").write_bytes(_encode(rgba, "PNG"))
  (root / "img" / "big.jpg").write_bytes(_encode(big))
  (root / "img" / "bad.jpg").write_bytes(np.random.default_rng(1).bytes(300))
  (root / "img" / "trunc.jpg").write_bytes(_truncated_jpeg())
  abs_b = str(root / "img" / "sub" / "b.jpg")
  rows = [("img/a.jpg", 'a gradient, with "quotes"'), ("img/a.jpg", "another caption of a"),
          (abs_b, "  a blue one \n"), ("c.png", "a png"), ("img/big.jpg", "a big one"),
          ("img/bad.jpg", "random bytes"), ("img/trunc.jpg", "cut short"),
          ("img/missing.jpg", "not there"), ("img/a.jpg", "   ")]
  big_small = np.asarray(Image.fromarray(big).resize((26, 16), Image.BICUBIC))
  expected = {("img/a.jpg", 'a gradient, with "quotes"'): a,
              ("img/a.jpg", "another caption of a"): a,
              (abs_b, "a blue one"): b, ("c.png", "a png"): rgba[..., :3],
              ("img/big.jpg", "a big one"): big_small}
  skipped = {"undecodable_image": 2, "missing_image_file": 1, "empty_caption": 1}
  return root, rows, expected, skipped


def _write_captions(root, rows, fmt):
  path = root / f"captions_{uuid.uuid4().hex[:6]}.{fmt}"
  if fmt == "jsonl":
    lines = [json.dumps({"image" if i % 2 else "path": p, "caption": c}) for i, (p, c) in
             enumerate(rows)]
    path.write_text("\n".join(lines[:3] + ["{not json"] + lines[3:]) + "\n")
  else:
    with open(path, "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
      writer.writerow(["filepath", " Caption "] if fmt == "csv" else ["id", "image", "text"])
      writer.writerows(rows if fmt == "csv" else [(i, p, c) for i, (p, c) in enumerate(rows)])
  return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_captions_file(folder, fmt, tmp_path, capsys):
  root, rows, expected, skipped = folder
  builder = ImageText(data_dir=tmp_path, source=_write_captions(root, rows, fmt), max_size=16)
  builder.download_and_prepare()
  got = _examples(builder)
  assert got.keys() == expected.keys()
  for k, want in expected.items():
    _close(got[k], want, tol=10.0 if "big" in k[0] else 6.0)
  want_skipped = skipped | ({"bad_json": 1} if fmt == "jsonl" else {})
  assert builder.skipped == {"train": want_skipped}
  assert f"skipped {sum(want_skipped.values())} (" in capsys.readouterr().out
  # The counts are on disk next to the data and come back with a reopened builder.
  assert json.loads((pathlib.Path(builder.data_dir) / "metadata.json").read_text())["skipped"] == {
      "train": want_skipped}
  again = ImageText(data_dir=tmp_path, config=builder.builder_config.name)
  assert again.skipped == {"train": want_skipped} and again.info.splits["train"].num_examples == 5
  assert pickle.loads(pickle.dumps(builder)).skipped == {"train": want_skipped}


def test_folder_source_and_original_size(folder, tmp_path):
  """A folder holding one captions file is a source; max_size=None keeps every size."""
  root, rows, expected, _ = folder
  sub = tmp_path / "src"
  sub.mkdir()
  _write_captions(sub, [(str(root / p) if not os.path.isabs(p) else p, c) for p, c in rows], "csv")
  builder = ImageText(data_dir=tmp_path / "data", source=sub, max_size=None)
  builder.download_and_prepare()
  got = {k[1]: v for k, v in _examples(builder).items()}
  assert got["a big one"].shape == (40, 64, 3)
  _close(got["a blue one"], expected[(str(root / "img/sub/b.jpg"), "a blue one")])


def _tar(path, members):
  """members: (name, bytes) for files, or (name, ('symlink', target))."""
  with tarfile.open(path, "w") as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      if isinstance(data, tuple):
        info.type, info.linkname = tarfile.SYMTYPE, data[1]
        tar.addfile(info)
      else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  root = tmp_path_factory.mktemp("shards")
  evil = f"evil_{uuid.uuid4().hex[:8]}"
  px = {k: _pixels(8 + i, 12, i) for i, k in enumerate(["000000000", "000000003", "000010000",
                                                        "000010002"])}
  meta = lambda k: json.dumps({"key": k, "status": "success"}).encode()  # noqa: E731
  _tar(root / "00000.tar", [
      ("000000000.jpg", _encode(px["000000000"])), ("000000000.txt", b"first"),
      ("000000000.json", meta("000000000")),
      ("000000001.jpg", np.random.default_rng(2).bytes(200)), ("000000001.txt", b"garbage"),
      ("000000002.txt", b"caption without image"), ("000000002.json", meta("000000002")),
      ("./000000003.jpg", _encode(px["000000003"])),
      ("000000003.json", json.dumps({"caption": "from json"}).encode()),
      ("000000004.jpg", _encode(px["000000003"])), ("000000004.json", meta("000000004")),
      ("000000005.jpg", _encode(px["000000003"])), ("000000005.txt", b" \n\t "),
      ("000000006.jpg", ("symlink", "/etc/passwd")), ("000000006.txt", b"a link"),
      (f"../../{evil}.jpg", _encode(px["000000000"])), (f"../../{evil}.txt", b"evil"),
      (f"/tmp/{evil}_abs.jpg", _encode(px["000000000"])),
  ])
  _tar(root / "00001.tar", [
      ("000010000.png", _encode(px["000010000"], "PNG")), ("000010000.txt", "caf\u00e9".encode()),
      ("000010001.jpg", _truncated_jpeg()), ("000010001.txt", b"truncated"),
      ("000010002.jpg", _encode(px["000010002"])), ("000010002.txt", b"last"),
      ("000010002.json", b"{broken"),
  ])
  expected = {("000000000", "first"): px["000000000"], ("000000003", "from json"): px["000000003"],
              ("000010000", "caf\u00e9"): px["000010000"], ("000010002", "last"): px["000010002"]}
  skipped = {"undecodable_image": 2, "missing_image": 2, "missing_caption": 1, "empty_caption": 1,
             "non_regular_member": 1, "unsafe_member": 3}
  return root, evil, expected, skipped


def test_tar_shards(shards, tmp_path, monkeypatch):
  root, evil, expected, skipped = shards
  work = tmp_path / "cwd" / "a" / "b"
  work.mkdir(parents=True)
  monkeypatch.chdir(work)
  builder = ImageText(data_dir=tmp_path / "data", source=str(root / "{00000..00001}.tar"))
  builder.download_and_prepare()
  got = _examples(builder)
  assert got.keys() == expected.keys()
  for k, want in expected.items():
    _close(got[k], want)
  assert builder.skipped == {"train": skipped}
  # Nothing was written outside data_dir, in particular not where ../../evil.jpg would land.
  data = pathlib.Path(builder.data_dir)
  for base in (work, root, tmp_path, data, data.parent, tmp_path / "data"):
    assert not (base / f"../../{evil}.jpg").resolve().exists()
  assert not pathlib.Path(f"/tmp/{evil}_abs.jpg").exists()
  assert not list(tmp_path.parent.rglob(f"{evil}*"))


def test_shard_specs(shards, tmp_path):
  root = shards[0]
  both = [root / "00000.tar", root / "00001.tar"]
  assert expand_shards(str(root / "{00000..00001}.tar")) == both
  assert expand_shards(str(root / "*.tar")) == both
  assert expand_shards([str(root / "00001.tar"), str(root / "0000[0].tar")]) == both[::-1]
  assert expand_shards(str(root / "{00000,00001}.tar")) == both
  expand_braces = image_text_sources._expand_braces
  assert expand_braces("s{8..10}/{a,b}") == ["s8/a", "s8/b", "s9/a", "s9/b", "s10/a", "s10/b"]
  assert expand_braces("{098..100}") == ["098", "099", "100"]
  # A folder of shards is a source too; a truncated shard keeps what came before the break.
  folder = tmp_path / "mixed"
  folder.mkdir()
  data = (root / "00000.tar").read_bytes()
  (folder / "00000.tar").write_bytes(data)
  (folder / "00001.tar").write_bytes(data[:5000])  # cut at a member header
  (folder / "00002.tar").write_bytes(data[:1000])  # cut inside the first member
  (folder / "00003.tar").write_bytes(b"not a tar file at all" * 30)
  builder = ImageText(data_dir=tmp_path / "data", source=folder)
  builder.download_and_prepare()
  assert builder.skipped["train"]["bad_shard"] == 3
  source = builder.as_data_source(split="train")
  got = sorted(source[i]["key"].decode() for i in range(len(source)))
  assert got == ["000000000", "000000000", "000000003"]  # 00001.tar's first sample is kept


def test_validation_fraction(tmp_path):
  rows = []
  for i in range(24):
    (tmp_path / f"{i}.jpg").write_bytes(_encode(_pixels(8, 8, i)))
    rows += [(f"{i}.jpg", f"image {i}"), (f"{i}.jpg", f"image {i} again")]
  rows.append(("gone.jpg", "missing"))
  src = _write_captions(tmp_path, rows, "csv")
  builder = ImageText(data_dir=tmp_path / "data", source=src, validation_fraction=0.25)
  builder.download_and_prepare()
  train, valid = _examples(builder, "train"), _examples(builder, "validation")
  train_keys, valid_keys = {k for k, _ in train}, {k for k, _ in valid}
  assert not train_keys & valid_keys and len(train_keys | valid_keys) == 24 and valid_keys
  assert len(train) + len(valid) == 48  # both captions of an image land in the same split
  assert sum(sum(s.values()) for s in builder.skipped.values()) == 1
  # Or a second captions file is the validation split.
  other = _write_captions(tmp_path, rows[:4] + [("1.jpg", " ")], "tsv")
  builder = ImageText(data_dir=tmp_path / "data", source=src, validation_source=other)
  builder.download_and_prepare()
  assert len(_examples(builder, "train")) == 48 and len(_examples(builder, "validation")) == 4
  assert builder.skipped == {"train": {"missing_image_file": 1},
                             "validation": {"empty_caption": 1}}


def test_exif_orientation_and_passthrough():
  pixels = _pixels(8, 16, 0)
  plain = _encode(pixels)
  assert image_text.to_jpeg(plain, max_size=256) == plain  # an upright RGB JPEG is kept as is
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to view
  rotated = image_text.to_jpeg(_encode(pixels, exif=exif), max_size=256)
  assert np.asarray(Image.open(io.BytesIO(rotated))).shape == (16, 8, 3)


def test_errors_name_the_problem(folder, tmp_path):
  root = folder[0]
  data = tmp_path / "data"
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    ImageText(data_dir=data, source=root / "nope.csv").download_and_prepare()
  with pytest.raises(FileNotFoundError, match="no_such_folder"):
    ImageText(data_dir=data, source=tmp_path / "no_such_folder" / "c.jsonl").download_and_prepare()
  with pytest.raises(FileNotFoundError, match="00002.tar"):
    ImageText(data_dir=data, source=str(root / "{00001..00002}.tar")).download_and_prepare()
  with pytest.raises(FileNotFoundError, match="matches no file"):
    ImageText(data_dir=data, source=str(root / "shard-*.tar")).download_and_prepare()
  bad = tmp_path / "bad.csv"
  bad.write_text("foo,bar\nimg/a.jpg,a caption\n")
  with pytest.raises(ValueError, match=r"\['foo', 'bar'\].*caption"):
    ImageText(data_dir=data, source=bad).download_and_prepare()
  bad_json = tmp_path / "bad.jsonl"
  bad_json.write_text(json.dumps({"url": "x.jpg", "caption": "c"}) + "\n")
  with pytest.raises(ValueError, match=r"\['url', 'caption'\].*image column"):
    ImageText(data_dir=data, source=bad_json).download_and_prepare()
  assert not data.exists()  # sources are checked before anything is written
  # Columns named explicitly make the same file usable.
  ok = tmp_path / "ok.csv"
  ok.write_text(f"foo,bar\n{root / 'img/a.jpg'},a caption\n")
  builder = ImageText(data_dir=data, source=ok, image_column="foo", caption_column="bar")
  builder.download_and_prepare()
  assert builder.info.splits["train"].num_examples == 1
  with pytest.raises(ValueError, match="config_name"):
    ImageText(data_dir=data, source=ok, config_name="../escape")
  assert not (tmp_path / "escape").exists() and "escape" not in os.listdir(data)
