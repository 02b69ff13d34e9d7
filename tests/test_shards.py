"""Streaming WebDataset shards (mmjax.data.shards, mmjax.data.webdataset).

References: the image_text builder prepared from the same shards (same elements, same batches
once in the same order), and image_text_sources' stream reader (same samples, same skip counts).
"""
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

import train
from configs import cc3m_clip_b16, laion_clip_b16
from mmjax.data import datasets, image_text_sources, pipeline, shards, webdataset
from mmjax.data.image_text import ImageText
from mmjax.data.shards import ShardSource
from mmjax.data.tokenizers import ByteTokenizer
from mmjax.errors import UserError
from tests.test_image_text import _tar  # members: (name, bytes) or (name, ('symlink', target))


def _jpeg(h, w, seed, quality=95):
  """A smooth (h, w) photo-like JPEG: a gradient with a little noise."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w]
  base = rng.integers(30, 180, size=3)
  pixels = np.stack([base[0] + 2 * x, base[1] + 2 * y, base[2] + x % 7], -1)
  pixels = np.clip(pixels + rng.integers(0, 12, pixels.shape), 0, 255).astype(np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, "JPEG", quality=quality)
  return out.getvalue()


def _good_shards(root, count=3, per_shard=8, size=(24, 40)):
  """img2dataset-style shards KEY.jpg + KEY.txt + KEY.json of small photos (under max_size, so
  the builder keeps their bytes); the brace spec of them."""
  root.mkdir(parents=True, exist_ok=True)
  for s in range(count):
    members = []
    for i in range(per_shard):
      key = f"{s:04d}{i:05d}"
      h, w = size[0] + i, size[1] - i
      members += [(f"{key}.jpg", _jpeg(h, w, s * 100 + i)),
                  (f"{key}.txt", f"photo {s} {i}".encode()),
                  (f"{key}.json", json.dumps({"key": key, "caption": "ignored"}).encode())]
    _tar(root / f"{s:05d}.tar", members)
  return str(root / f"{{00000..{count - 1:05d}}}.tar")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
  root = tmp_path_factory.mktemp("good")
  spec = _good_shards(root / "shards")
  return root, spec


def test_index_matches_stream_reader(good):
  root, spec = good
  source = ShardSource(spec, index_dir=root / "index")
  reference = list(image_text_sources.read_source(image_text_sources.resolve_source(spec)))
  assert len(source) == len(reference) == 24 and source.skipped == {}
  for i, item in enumerate(reference):
    got = source[i]
    assert got["key"].decode() == item.key and got["caption"].decode() == item.caption
    want = np.asarray(Image.open(io.BytesIO(item.image)).convert("RGB"))
    np.testing.assert_array_equal(got["image"], want)
  # The indexes went beside the shards; an unchanged shard is not indexed again.
  assert sorted(p.name for p in (root / "shards").glob("*.mmjax_index.*"))[:2] == [
      "00000.tar.mmjax_index.json", "00000.tar.mmjax_index.npy"]


class _Reordered:
  """A source read in another order: source[order[i]]."""

  def __init__(self, source, order):
    self._source, self._order = source, order

  def __len__(self):
    return len(self._order)

  def __getitem__(self, i):
    return self._source[self._order[i]]

  def __repr__(self):
    return f"Reordered({self._source!r})"


def _batches(loader, n):
  it = iter(loader)
  return [next(it) for _ in range(n)], it


@pytest.mark.parametrize("undecoded", [False, True])
def test_same_elements_batches_and_resume_as_prepared(good, tmp_path, undecoded):
  """Decoded arrays, or (undecoded: the transform's fast path) the stored JPEG bytes, which the
  builder keeps byte for byte for these small RGB JPEGs."""
  root, spec = good
  streamed = ShardSource(spec, index_dir=root / "index", max_size=64, undecoded=undecoded)
  builder = ImageText(data_dir=tmp_path / "tfds", source=spec, max_size=64)
  builder.download_and_prepare()
  decoders = pipeline.image_decoders() if undecoded else None
  prepared = builder.as_data_source(split="train", decoders=decoders)
  # The prepared records are in TFDS's shuffled order: put them in shard order by key.
  position = {prepared[i]["key"]: i for i in range(len(prepared))}
  order = [position[streamed[i]["key"]] for i in range(len(streamed))]
  prepared = _Reordered(prepared, order)
  for i in range(len(streamed)):
    a, b = streamed[i], prepared[i]
    assert a["caption"] == b["caption"] and a["key"] == b["key"]
    if undecoded:
      assert isinstance(a["image"], bytes) and a["image"] == np.asarray(b["image"]).item()
    else:
      np.testing.assert_array_equal(a["image"], b["image"])
  transform = pipeline.ImageTextTransform(32, ByteTokenizer(context_length=16), train=True,
                                          keep=())
  make = lambda src: pipeline.make_loader(src, transform, global_batch_size=8, seed=3)  # noqa
  got, it = _batches(make(streamed), 5)
  want, _ = _batches(make(prepared), 5)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    np.testing.assert_array_equal(a["image"], b["image"])
  # Exact resume: the state after 2 batches gives batches 3.. in a fresh loader.
  it2 = iter(make(streamed))
  next(it2), next(it2)
  state = it2.get_state()
  resumed = iter(make(ShardSource(spec, index_dir=root / "index", max_size=64,
                                  undecoded=undecoded)))
  resumed.set_state(state)
  for b in got[2:]:
    np.testing.assert_array_equal(next(resumed)["image"], b["image"])


def test_shrunk_images_match_prepared_geometry(tmp_path):
  spec = _good_shards(tmp_path / "big", count=1, per_shard=3, size=(90, 130))
  streamed = ShardSource(spec, index_dir=tmp_path / "index", max_size=32)
  builder = ImageText(data_dir=tmp_path / "tfds", source=spec, max_size=32)
  builder.download_and_prepare()
  prepared = {e["key"]: e["image"] for e in map(builder.as_data_source("train").__getitem__,
                                                   range(3))}
  for i in range(3):
    got = streamed[i]
    want = prepared[got["key"]]
    assert got["image"].shape == want.shape and min(want.shape[:2]) == 32
    # the builder re-encodes a shrunk image as JPEG (quality 95): that rounding is the difference
    assert np.abs(got["image"].astype(float) - want).mean() < 2.0


@pytest.fixture
def bad(tmp_path):
  return _bad_shards(tmp_path / "bad")


def _bad_shards(root):
  """The image_text builder's bad-shard cases: links, traversal, missing image / caption, corrupt
  and truncated images, empty caption, a truncated shard and a file that is not a tar."""
  root.mkdir()
  jpeg = _jpeg(20, 30, 0)
  meta = lambda k: json.dumps({"key": k}).encode()  # noqa: E731
  _tar(root / "00000.tar", [
      ("000000000.jpg", jpeg), ("000000000.txt", b"first"),
      ("000000001.jpg", np.random.default_rng(2).bytes(200)), ("000000001.txt", b"garbage"),
      ("000000002.txt", b"caption without image"),
      ("./000000003.jpg", jpeg), ("000000003.json", json.dumps({"caption": "from json"}).encode()),
      ("000000004.jpg", jpeg), ("000000004.json", meta("000000004")),
      ("000000005.jpg", jpeg), ("000000005.txt", b" \n\t "),
      ("000000006.jpg", ("symlink", "/etc/passwd")), ("000000006.txt", b"a link"),
      ("../../evil.jpg", jpeg), ("../../evil.txt", b"evil"), ("/tmp/evil_abs.jpg", jpeg),
      ("000000007.jpg", jpeg[:len(jpeg) // 2]), ("000000007.txt", b"cut short"),
      ("000000008.jpg", jpeg), ("000000008.txt", b"caf\xe9"),
      ("000000009.jpg", jpeg), ("000000009.txt", b"last"),
      ("000000010.jpg", jpeg),  # no caption member at all
  ])
  data = (root / "00000.tar").read_bytes()
  (root / "00001.tar").write_bytes(data[:6000])  # cut inside a member: kept up to the break
  (root / "00002.tar").write_bytes(b"not a tar file at all" * 30)
  return root


def test_bad_samples_are_skipped_and_counted(bad, capsys):
  spec = str(bad / "{00000..00002}.tar")
  source = ShardSource(spec, index_dir=bad / "index")
  assert source.skipped == {"missing_image": 2, "non_regular_member": 1, "unsafe_member": 3,
                            "bad_shard": 2, "missing_caption": 1}
  # 00001.tar, cut at byte 6000, keeps the samples before the break (000000000, 000000001);
  # 00002.tar is not a tar file.
  cut = ShardSource(str(bad / "00001.tar"), index_dir=bad / "index")
  assert len(cut) == 2 and cut.skipped == {"bad_shard": 1}
  # reading every record never raises: a bad record gives the next good one (wrapping around)
  keys = [source[i]["key"].decode()[-1] for i in range(len(source))]
  assert keys == ["0", "3", "3", "9", "9", "9", "9", "9", "0", "0"]
  assert dict(source.read_skipped) == {"undecodable_image": 3, "missing_caption": 1,
                                       "empty_caption": 1, "bad_caption": 1}
  # Undecoded (the fast path): a truncated or corrupt JPEG is still caught here, never passed on.
  fast = ShardSource(spec, index_dir=bad / "index", undecoded=True)
  assert [fast[i]["key"].decode()[-1] for i in range(len(fast))] == keys
  assert fast.read_skipped == source.read_skipped
  # The stream reader of the image_text builder counts the same reasons for 00000.tar.
  single = ShardSource(str(bad / "00000.tar"), beside=False, index_dir=bad / "index2")
  for i in range(len(single)):
    single[i]
  counts = {**single.skipped}
  for reason, n in single.read_skipped.items():
    counts[reason] = counts.get(reason, 0) + n
  reference = {}
  resolved = image_text_sources.resolve_source(str(bad / "00000.tar"))
  for x in image_text_sources.read_source(resolved):
    if isinstance(x, image_text_sources.Skip):
      reference[x.reason] = reference.get(x.reason, 0) + 1
  reference["undecodable_image"] = 2  # decoded by the builder, not by the stream reader
  assert counts == reference
  # no member was extracted anywhere
  assert not (bad.parent.parent / "evil.jpg").exists()
  assert not os.path.exists("/tmp/evil_abs.jpg")
  builder = datasets.get("webdataset").builder()(data_dir=bad / "data", source=spec,
                                                 index_dir=bad / "index")
  builder.as_data_source("train")
  out = capsys.readouterr().out
  assert "10 samples, skipped 9 (unsafe_member 3, missing_image 2, bad_shard 2" in out


def test_passes_undecoded_only_what_the_fast_path_decodes_alike():
  jpeg = _jpeg(20, 30, 0)
  assert shards.passes_undecoded(jpeg) and shards.passes_undecoded(jpeg + b"\0\0")
  assert not shards.passes_undecoded(jpeg[:-40])  # truncated: no end-of-image marker
  assert not shards.passes_undecoded(jpeg, max_pixels=599)
  image = Image.open(io.BytesIO(jpeg))
  variants = {}
  for name, kwargs, mode in (("rotated", {"exif": _exif_rotated()}, "RGB"), ("cmyk", {}, "CMYK"),
                             ("png", {"format": "PNG"}, "RGB")):
    out = io.BytesIO()
    image.convert(mode).save(out, **({"format": "JPEG"} | kwargs))
    variants[name] = out.getvalue()
  assert not any(shards.passes_undecoded(v) for v in variants.values())
  # ... and decode_image turns those upright RGB: the rotated one comes out 30 x 20
  assert shards.decode_image(variants["rotated"]).shape == (30, 20, 3)
  assert shards.decode_image(variants["cmyk"]).shape == (20, 30, 3)


def _exif_rotated() -> bytes:
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees to display
  return exif.tobytes()


def test_index_cache_and_rebuild(good, tmp_path, monkeypatch):
  root, spec = good
  shard = root / "shards" / "00001.tar"
  calls = []
  real = shards.index_shard
  monkeypatch.setattr(shards, "index_shard", lambda p: calls.append(p) or real(p))
  ShardSource(spec, index_dir=tmp_path / "cache", beside=False)
  assert len(calls) == 3 and len(list((tmp_path / "cache").glob("*.npy"))) == 3
  ShardSource(spec, index_dir=tmp_path / "cache", beside=False)
  assert len(calls) == 3  # cached, keyed by path, size and mtime
  os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
  ShardSource(spec, index_dir=tmp_path / "cache", beside=False)
  assert [p.name for p in calls[3:]] == ["00001.tar"]


def test_index_ahead_from_the_command_line(good, tmp_path, monkeypatch, capsys):
  root, spec = good
  webdataset.main([spec, "--index_dir", str(tmp_path / "ahead"), "--no_beside", "--workers", "1"])
  assert "skipped: none" in capsys.readouterr().out
  assert len(list((tmp_path / "ahead").glob("*.mmjax_index.npy"))) == 3
  monkeypatch.setattr(shards, "index_shard", lambda p: pytest.fail(f"indexed {p} again"))
  assert len(ShardSource(spec, index_dir=tmp_path / "ahead", beside=False)) == 24


def test_pickles_for_workers_and_errors(good, tmp_path, monkeypatch):
  root, spec = good
  source = ShardSource(spec, index_dir=root / "index")
  first = source[5]
  keys = [source[i]["key"] for i in range(len(source))]
  monkeypatch.setattr(shards, "MAX_MAPPED", 1)  # every shard change unmaps the previous index
  fresh = ShardSource(spec, index_dir=root / "index")
  assert [fresh[i]["key"] for i in (0, 23, 8, 16, *range(24))][4:] == keys
  assert len(fresh._open) == 1  # pylint: disable=protected-access
  copy = pickle.loads(pickle.dumps(source))  # open files are not pickled, reopened on use
  assert repr(copy) == repr(source) and copy[5]["key"] == first["key"]
  np.testing.assert_array_equal(copy[5]["image"], first["image"])
  with pytest.raises(UserError, match="00003.tar"):
    ShardSource(str(root / "shards" / "{00000..00003}.tar"))
  gz = tmp_path / "a.tar.gz"
  with tarfile.open(gz, "w:gz") as tar:
    tar.add(root / "shards" / "00000.tar", arcname="x.txt")
  with pytest.raises(UserError, match="not plain .tar"):
    ShardSource(str(gz))
  with pytest.raises(UserError, match="max_size"):
    ShardSource(spec, max_size=0)
  with pytest.raises(IndexError):
    source[len(source)]


def test_web_configs_stream_shards_by_default(good, tmp_path):
  for module in (cc3m_clip_b16, laion_clip_b16):
    config = module.get_config("")
    assert config.dataset.name == "webdataset"
    assert config.dataset.builder_kwargs.source == module.SHARDS
  root, spec = good
  config = cc3m_clip_b16.get_config("tiny")
  config.dataset.data_dir = str(tmp_path / "data")
  config.dataset.builder_kwargs.source = spec
  config.update_from_flattened_dict(dict(batch_size=8, total_steps=3, log_every=1,
                                         checkpoint_every=3, warmup_steps=1))
  train.train_and_evaluate(config, tmp_path / "work")
  rows = [json.loads(r) for r in (tmp_path / "work" / "metrics.jsonl").read_text().splitlines()]
  assert [r["loss"] for r in rows if "loss" in r] and all(np.isfinite(r["loss"]) for r in rows
                                                         if "loss" in r)
  assert (tmp_path / "work" / "checkpoints" / "3").is_dir()
