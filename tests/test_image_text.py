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
import re
import struct
import tarfile
import uuid
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from mmjax.data import image_files, image_text, image_text_sources
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


def _over_white(rgb, alpha):
  """rgb (h, w, c) composited over white with alpha (h, w) in 0..255, float64."""
  a = alpha[..., None].astype(np.float64) / 255
  return rgb.astype(np.float64) * a + 255 * (1 - a)


def _stretched(values):
  """The I / F rule, independently: finite min..max onto 0..255."""
  lo, hi = values.min(), values.max()
  return np.rint((values.astype(np.float64) - lo) / (hi - lo) * 255)


def _mode_images():
  """{name: (file suffix, Pillow image, expected (16, 32, 3) RGB as float64)}: one per mode."""
  y, x = np.mgrid[0:16, 0:32]
  ramp, vramp = (x * 8).astype(np.uint8), (y * 16).astype(np.uint8)

  def grey(a):
    return np.repeat(np.asarray(a, np.float64)[..., None], 3, -1)

  def merge(mode, a):
    return Image.merge(mode, [Image.fromarray(c) for c in np.moveaxis(a, -1, 0)])

  one = ((x // 8 + y // 8) % 2).astype(bool)
  index = np.minimum(x, 16).astype(np.uint8)  # the right half is all 16: its edge is a block's
  red = np.minimum(255, 8 * np.arange(256))
  palette = np.stack([red, 255 - red, np.full(256, 128)], -1).astype(np.uint8)
  paletted = Image.new("P", (32, 16))
  paletted.putdata(index.ravel().tolist())
  paletted.putpalette(palette.ravel().tolist())
  clear = palette[index].astype(np.float64)
  clear[index == 16] = 255
  rgba = np.dstack([_pixels(16, 32, 5), vramp])
  cmyk = np.dstack([ramp, (y * 10).astype(np.uint8), np.full_like(ramp, 50),
                    np.full_like(ramp, 60)])
  c, m, yy, k = (cmyk[..., i].astype(np.float64) for i in range(4))
  ycc = np.dstack([ramp, 128 + 2 * y, 100 + 2 * x]).astype(np.uint8)
  luma, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
  jfif = np.stack([luma + 1.402 * (cr - 128), luma - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                   luma + 1.772 * (cb - 128)], -1)
  wide = (1000 + 1200 * x + 20 * y).astype(np.uint16)
  masked = grey(wide >> 8)
  masked[wide == wide[0, 3]] = 255
  int32 = (-70000 + 9000 * x + 100 * y).astype(np.int32)
  float32 = (-0.5 + 0.08 * x + 0.001 * y).astype(np.float32)
  return {
      "1": ("png", Image.fromarray(one), grey(one * 255.0)),
      "L": ("png", Image.fromarray(ramp), grey(ramp)),
      "LA": ("png", Image.fromarray(np.dstack([ramp, vramp])), _over_white(grey(ramp), vramp)),
      "P": ("png", paletted, palette[index]),
      "P transparency": ("png", (paletted, {"transparency": 16}), clear),
      "RGBA": ("png", Image.fromarray(rgba), _over_white(rgba[..., :3], vramp)),
      "CMYK": ("tif", merge("CMYK", cmyk), np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k),
                                                     (255 - yy) * (255 - k)], -1) / 255),
      "YCbCr": ("tif", merge("YCbCr", ycc), np.clip(jfif, 0, 255)),
      "I;16": ("png", Image.fromarray(wide), grey(wide >> 8)),
      "I;16 transparency": ("png", (Image.fromarray(wide), {"transparency": int(wide[0, 3])}),
                            masked),
      "I;16B": ("tif", Image.frombytes("I;16B", (32, 16), wide.astype(">u2").tobytes()),
                grey(wide >> 8)),
      "I": ("tif", Image.fromarray(int32), grey(_stretched(int32))),
      "F": ("tif", Image.fromarray(float32), grey(_stretched(float32))),
  }


def test_every_image_mode_becomes_8bit_rgb(tmp_path):
  """Each mode Pillow opens is converted as a user expects (against numpy references of the same
  values: JFIF YCbCr, CMYK as (255 - C)(255 - K) / 255, alpha over white, I;16 >> 8, I and F
  min..max), or skipped. Stored as JPEG at quality 100: within 1 level on average, 10 at most."""
  rows = []
  for name, (suffix, image, _) in _mode_images().items():
    image, save = image if isinstance(image, tuple) else (image, {})
    file = f"{re.sub(r'[^A-Za-z0-9]', '_', name)}.{suffix}"
    image.save(tmp_path / file, **save)
    rows.append((file, name))
  lab = Image.merge("LAB", [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (50, 128, 128)])
  lab.save(tmp_path / "lab.tif")
  src = _write_captions(tmp_path, rows + [("lab.tif", "LAB")], "csv")
  builder = ImageText(data_dir=tmp_path / "data", source=src, max_size=None, jpeg_quality=100)
  builder.download_and_prepare()
  got = {caption: image for (_, caption), image in _examples(builder).items()}
  assert builder.skipped == {"train": {"unsupported_mode": 1}}  # LAB
  assert got.keys() == _mode_images().keys()
  for name, (_, _, want) in _mode_images().items():
    error = np.abs(got[name].astype(np.float64) - want)
    assert error.mean() < 1.0 and error.max() <= 10, (name, error.mean(), error.max())


def test_wide_mode_rules_exactly():
  """The rules without JPEG in between: 16-bit keeps the high byte in every byte order (and for I
  from a PNG); I and F stretch their finite range, NaN and -inf to 0, +inf to 255, constant to 0."""
  wide = np.array([[0, 255, 256, 32768], [40000, 65280, 65534, 65535]], np.uint16)
  for mode, order in [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")]:
    image = Image.frombytes(mode, (4, 2), wide.astype(order).tobytes())
    np.testing.assert_array_equal(np.asarray(image_files._to_rgb(image))[..., 0], wide // 256)
  as_int = Image.fromarray(wide.astype(np.int32))
  np.testing.assert_array_equal(np.asarray(image_files._to_rgb(as_int, sixteen_bit=True))[..., 1],
                                wide // 256)
  floats = np.array([[np.nan, -np.inf, 1.0, 1.5], [2.0, 3.0, np.inf, 1.0]], np.float32)
  got = np.asarray(image_files._to_rgb(Image.fromarray(floats)))
  np.testing.assert_array_equal(got[..., 2], [[0, 0, 0, 64], [128, 255, 255, 0]])
  constant = Image.fromarray(np.full((2, 2), 7, np.int32))
  np.testing.assert_array_equal(np.asarray(image_files._to_rgb(constant)), 0)
  with pytest.raises(image_files._Bad, match="unsupported_mode"):
    image_files._to_rgb(Image.new("La", (2, 2)))  # premultiplied alpha: Pillow cannot convert it
  assert {"unsupported_mode", "too_many_pixels"} <= image_text.SKIP_REASONS.keys()


def _huge_png(width, height) -> bytes:
  """A valid all-black greyscale PNG of width x height: ~1/1000 of its pixel count on disk."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  deflate, row = zlib.compressobj(9), bytes(width + 1)  # filter type 0, then the pixels
  idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
  header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_too_many_pixels_is_skipped_before_decoding(tmp_path, monkeypatch):
  """A 12000 x 12000 PNG of 0.14 MB is skipped from its header by default, never decoded; a
  smaller max_pixels skips smaller images, None keeps them; each value is a variant of its own."""
  (tmp_path / "huge.png").write_bytes(_huge_png(12000, 12000))
  assert (tmp_path / "huge.png").stat().st_size < 400_000
  (tmp_path / "small.png").write_bytes(_encode(_pixels(10, 10, 0), "PNG"))
  (tmp_path / "mid.png").write_bytes(_encode(_pixels(20, 20, 1), "PNG"))
  decoded, load = [], ImageFile.ImageFile.load

  def spy(image):
    decoded.append(image.size)
    if image.size[0] * image.size[1] > 10**6:
      raise AssertionError(f"decoded an image of {image.size}")
    return load(image)

  monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
  src = _write_captions(tmp_path, [("huge.png", "huge"), ("small.png", "small"),
                                   ("mid.png", "middle")], "csv")
  builder = ImageText(data_dir=tmp_path / "data", source=src)
  builder.download_and_prepare()
  assert builder.skipped == {"train": {"too_many_pixels": 1}}
  assert (12000, 12000) not in decoded and (10, 10) in decoded
  names = set()
  for limit, kept in [(300, {"small"}), (None, {"small", "middle"})]:
    src = _write_captions(tmp_path, [("small.png", "small"), ("mid.png", "middle")], "csv")
    builder = ImageText(data_dir=tmp_path / "data", source=src, max_pixels=limit)
    builder.download_and_prepare()
    assert {caption for _, caption in _examples(builder)} == kept
    assert builder.builder_config.max_pixels == limit
    names.add(image_text.make_config(src, max_pixels=limit).name)
  assert len(names | {image_text.make_config(src).name}) == 3
  # Pillow's own limit (twice Image.MAX_IMAGE_PIXELS, an error in Image.open) counts the same.
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)
  builder = ImageText(data_dir=tmp_path / "data", source=src, max_pixels=None, config_name="pil")
  builder.download_and_prepare()
  assert builder.skipped == {"train": {"too_many_pixels": 1}}
  for bad in (0, -5, 1.5, True, "many"):
    with pytest.raises(ValueError, match=f"max_pixels must be a positive int or None, got {bad!r}"):
      ImageText(data_dir=tmp_path / "data", source=src, max_pixels=bad)


def test_non_utf8_captions_are_bad_captions_in_every_source(folder, tmp_path, caplog):
  """Bytes that are not UTF-8 (or a lone surrogate escape in JSON) skip that row as bad_caption (or
  bad_row / unsafe_member when in the image path or member name); the other rows are kept."""
  root = folder[0]
  table = root / f"latin1_{uuid.uuid4().hex[:6]}.csv"
  table.write_bytes(b"path,caption\nimg/a.jpg,a good one\nimg/a.jpg,caf\xe9 in latin-1\n"
                    b"img/\xe9.jpg,a fine caption\nimg/sub/b.jpg,another good one\n")
  lines = root / f"latin1_{uuid.uuid4().hex[:6]}.jsonl"
  lines.write_bytes(b'{"image": "img/a.jpg", "caption": "a good one"}\n'
                    b'{"image": "img/a.jpg", "caption": "caf\xe9 in latin-1"}\n'
                    b'{"image": "img/a.jpg", "caption": "lone \\ud800 surrogate"}\n'
                    b'{"image": "img/sub/b.jpg", "caption": "another good one"}\n')
  jpeg = (root / "img" / "a.jpg").read_bytes()
  shard = tmp_path / "00000.tar"
  _tar(shard, [("0.jpg", jpeg), ("0.txt", b"a good one"), ("1.jpg", jpeg), ("1.txt", b"caf\xe9"),
               ("2.jpg", jpeg), ("2.json", b'{"caption": "lone \\ud800 surrogate"}'),
               ("caf\udce9.jpg", jpeg), ("3.txt", b"latin-1 name"),
               ("4.jpg", jpeg), ("4.txt", b"another good one")])
  for source, skipped in [(table, {"bad_caption": 1, "bad_row": 1}), (lines, {"bad_caption": 2}),
                          (shard, {"bad_caption": 2, "unsafe_member": 1, "missing_image": 1})]:
    builder = ImageText(data_dir=tmp_path / "data", source=source, max_size=16)
    builder.download_and_prepare()
    assert builder.skipped == {"train": skipped}, source
    assert sorted(c for _, c in _examples(builder)) == ["a good one", "another good one"], source
  # the skip lines name the non-UTF-8 member printably (a surrogate cannot be written as UTF-8)
  assert "skipped 00000.tar:caf\\udce9.jpg: unsafe_member" in caplog.text.encode("utf-8").decode()
