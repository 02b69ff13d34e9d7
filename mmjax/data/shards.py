"""Training straight from img2dataset WebDataset shards: a random-access source over tar files.

    source = ShardSource("/data/cc3m/{00000..00331}.tar", index_dir="~/.cache/mmjax/shard_index")
    len(source)     # usable samples over all shards (structurally bad ones already left out)
    source[0]       # {'image': (h, w, 3) uint8, 'caption': b'a dog ...', 'key': b'000000001'}
    source.skipped  # {'missing_caption': 3, 'unsafe_member': 1, ...}: what the indexes left out
    ShardSource(..., undecoded=True)[0]['image']  # b'\xff\xd8...': the transform's fast path

The same element format as the image_text builder's prepared source, so ImageTextTransform,
GlobalBatchSampler (global shuffling, each host reading only its slice of every global batch) and
grain's exact resume work unchanged; nothing is prepared but a small index per shard.

Index: the member offsets of one shard, built once by reading its tar headers (tarfile's
offset_data; the data between headers is skipped, nothing is extracted), stored beside the shard
(SHARD.tar.mmjax_index.npy + .json) when its folder is writable, else in index_dir under a hash of the
shard's path. The .json records the shard's size and mtime: a shard that changed is indexed again.
Only plain .tar shards have offsets (a .tar.gz has to be read as a stream: prepare it with the
image_text builder).

Bad samples: what is wrong with a shard's structure is found at index time and left out of the
index, counted by reason (mmjax.data.image_text_sources.SKIP_REASONS): members with an absolute or
'..' path or a non-UTF-8 name (unsafe_member), links and devices (non_regular_member), a key with
no image (missing_image) or no .txt / .json (missing_caption), an image member over 64 MiB
(image_too_large), a shard that ends early (bad_shard: the samples before the break are kept).
What needs the data itself (an image that does not decode, a caption that is not UTF-8 text) is
found when the sample is read: __getitem__ then returns the next usable sample instead (record
i + 1, i + 2, ...: deterministic, so batches and resume stay exact), counts the bad record once
per process by reason (read_skipped; each grain worker process counts its own) and logs it with
the running count. A whole epoch never crashes on one bad sample.
"""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import json
import logging
import os
import pathlib
import tarfile
import threading
import warnings

import numpy as np
from PIL import Image

from mmjax.data.image_files import MAX_PIXELS, _Bad, prepared_image
from mmjax.data.image_text_sources import (IMAGE_EXTENSIONS, MAX_IMAGE_BYTES, _caption_problem,
                                           _member_key, expand_shards)
from mmjax.errors import UserError

__all__ = ["ShardSource", "index_shard", "load_index", "decode_image", "passes_undecoded",
           "INDEX_VERSION"]

INDEX_VERSION = 1
RECORD = np.dtype([("image", "<i8"), ("image_size", "<i8"), ("caption", "<i8"),
                   ("caption_size", "<i8"), ("caption_json", "u1"), ("key", "S64")])
"""One index row: byte offsets and sizes of a sample's image and caption members (caption_json:
the caption is json['caption'] of a .json member, no .txt), and its key (WebDataset's: the member
path up to the first dot of the file name; longer keys are cut to 64 bytes in 'key' only)."""
MAX_LOGGED = 10
MAX_MAPPED = 256
DEFAULT_INDEX_DIR = "~/.cache/mmjax/shard_index"


# ----------------------------------------------------------------------------------------------
# Indexing one shard: headers only

def _sample(key: str, files: dict):
  """(row, None) for a sample's members {ext: TarInfo}, or (None, skip reason)."""
  ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
  if ext is None:
    return None, "missing_image"
  if files[ext].size > MAX_IMAGE_BYTES:
    return None, "image_too_large"
  text = files.get("txt") or files.get("json")
  if text is None:
    return None, "missing_caption"
  image = files[ext]
  return (image.offset_data, image.size, text.offset_data, text.size, "txt" not in files,
          key.encode("utf-8")[:64]), None


def index_shard(path) -> tuple[np.ndarray, dict[str, int], dict[str, list[str]]]:
  """(rows (n,) RECORD, {reason: count}, {reason: up to 10 'shard:member' examples}) of one plain
  .tar shard, from its headers only. Consecutive members with one key form a sample, as in
  WebDataset; a shard that ends early keeps the samples before the break."""
  path = pathlib.Path(path)
  rows, counts, examples = [], collections.Counter(), collections.defaultdict(list)

  def skip(reason, where):
    counts[reason] += 1
    if len(examples[reason]) < MAX_LOGGED:
      examples[reason].append(where.encode("utf-8", "backslashreplace").decode("utf-8"))

  def close(key, files):
    row, reason = _sample(key, files)
    if row is None:
      skip(reason, f"{path.name}:{key}")
    else:
      rows.append(row)

  key, files, size = None, {}, path.stat().st_size
  try:
    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
      for member in tar:  # seeks from header to header; member data is never read
        where = f"{path.name}:{member.name}"
        if member.isdir():
          continue
        if not member.isreg():
          skip("non_regular_member", where)
          continue
        split = _member_key(member.name)
        if split is None:
          skip("unsafe_member", where)
          continue
        if split[1] not in IMAGE_EXTENSIONS + ("txt", "json"):
          continue
        if member.offset_data + member.size > size:
          raise tarfile.ReadError(f"member {member.name} ends past the end of the file")
        if split[0] != key:
          if key is not None:
            close(key, files)
          key, files = split[0], {}
        files[split[1]] = member
      if tar.offset + tarfile.BLOCKSIZE > size:
        raise tarfile.ReadError("it ends without the end-of-archive block (truncated?)")
  except (tarfile.TarError, EOFError, OSError) as e:
    skip("bad_shard", f"{path}: {e}")
    key = None  # the sample being read when the shard broke is dropped with it
  if key is not None:
    close(key, files)
  return np.array(rows, RECORD), dict(counts), dict(examples)


def _index_paths(shard: pathlib.Path, index_dir: pathlib.Path | None, beside: bool):
  """(npy, json) paths of a shard's index: beside it when its folder is writable, else in
  index_dir under a hash of its resolved path."""
  if beside and os.access(shard.parent, os.W_OK):
    base = shard.parent / f"{shard.name}.mmjax_index"
  else:
    if index_dir is None:
      raise UserError(f"shard folder {shard.parent} is not writable and no index_dir was given for "
                      "the shard indexes")
    digest = hashlib.sha1(str(shard).encode()).hexdigest()[:20]
    base = index_dir / f"{shard.stem[:40]}-{digest}.mmjax_index"
  return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")


def _stamp(shard: pathlib.Path) -> dict:
  stat = shard.stat()
  return {"version": INDEX_VERSION, "path": str(shard), "size": stat.st_size,
          "mtime_ns": stat.st_mtime_ns}


def _write_atomic(path: pathlib.Path, write) -> None:
  """write(file) to a temporary name, then renamed: several hosts may index one shard at once."""
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
  with open(tmp, "wb") as f:
    write(f)
  os.replace(tmp, path)


def load_index(shard, index_dir=None, beside: bool = True) -> tuple[pathlib.Path, dict]:
  """(the index's .npy path, its metadata {num_samples, skipped, skipped_examples, size, ...}) of
  one shard, built now if it is missing or the shard's size or mtime changed."""
  shard = pathlib.Path(shard)
  index_dir = None if index_dir is None else pathlib.Path(index_dir).expanduser()
  npy, meta_path = _index_paths(shard, index_dir, beside)
  stamp = _stamp(shard)
  try:
    meta = json.loads(meta_path.read_text())
    if all(meta.get(k) == v for k, v in stamp.items()) and npy.is_file():
      return npy, meta
  except (OSError, ValueError):
    pass
  rows, counts, examples = index_shard(shard)
  meta = {**stamp, "num_samples": len(rows), "skipped": counts, "skipped_examples": examples}
  npy.parent.mkdir(parents=True, exist_ok=True)
  _write_atomic(npy, lambda f: np.save(f, rows, allow_pickle=False))
  _write_atomic(meta_path, lambda f: f.write(json.dumps(meta).encode()))  # last: marks it whole
  return npy, meta


# ----------------------------------------------------------------------------------------------
# Decoding one sample

def decode_image(data: bytes, max_size: int | None = 256,
                 max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
  """(h, w, 3) uint8 of encoded image bytes, upright (EXIF) 8-bit RGB with the shorter side shrunk
  (bicubic) to max_size, as the image_text builder prepares it (without its JPEG re-encoding: a
  shrunk image differs from the prepared one by that JPEG's rounding only). A JPEG larger than
  needed is decoded at a reduced DCT scale (Pillow's draft). Raises _Bad(reason) when unusable."""
  return np.asarray(prepared_image(data, max_size, max_pixels)[0])


def passes_undecoded(data: bytes, max_pixels: int | None = MAX_PIXELS) -> bool:
  """Whether encoded image bytes can go to the transform undecoded (mmjax.data.decode then decodes
  only the crop, at a reduced DCT scale) and give what decode_image would: a JPEG that ends with
  its end-of-image marker (not truncated), 8-bit RGB or grey, upright (no EXIF rotation), within
  max_pixels. Reads the header only."""
  if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
    return False
  try:
    image = Image.open(io.BytesIO(data), formats=("JPEG",))
    upright = image.getexif().get(0x0112, 1) in (0, 1)
  except Exception:  # noqa: BLE001 - not a readable JPEG header: decode_image decides
    return False
  return (image.mode in ("RGB", "L") and upright
          and (max_pixels is None or image.width * image.height <= max_pixels))


def _caption(data: bytes, is_json: bool) -> str:
  """The stripped caption of a .txt member (or json['caption']); _Bad(reason) if unusable."""
  if is_json:
    try:
      meta = json.loads(data)
    except ValueError:
      meta = None
    if not isinstance(meta, dict):
      raise _Bad("bad_json")
    caption = meta.get("caption")
  else:
    try:
      caption = data.decode("utf-8")
    except UnicodeDecodeError as e:
      raise _Bad("bad_caption") from e
  if problem := _caption_problem(caption):
    raise _Bad(problem)
  return caption.strip()


# ----------------------------------------------------------------------------------------------
# The source

class ShardSource:
  """Random access to the samples of WebDataset tar shards through their indexes (see the module
  docstring). Picklable (grain worker processes): memory maps are not pickled, but made again.

  Args:
    spec: a shard path, glob, brace pattern ("cc3m/{00000..00331}.tar") or a list of those.
    index_dir: where indexes go for shards whose folder is not writable (or beside=False).
    beside: store indexes beside the shards when their folder is writable.
    max_size, max_pixels: as for the image_text builder (decode_image).
    num_threads: threads indexing shards that have no index yet.
    undecoded: give 'image' as the stored JPEG bytes where passes_undecoded allows it (the fast
      path of ImageTextTransform, as a prepared source read with pipeline.image_decoders()): the
      transform then decodes only the crop, at reduced scale, from the image at its stored size
      (max_size does not apply); other images are decoded here as without it.
  """

  def __init__(self, spec, *, index_dir=DEFAULT_INDEX_DIR, beside: bool = True,
               max_size: int | None = 256, max_pixels: int | None = MAX_PIXELS,
               num_threads: int | None = None, undecoded: bool = False):
    for name, value in (("max_size", max_size), ("max_pixels", max_pixels)):
      if value is not None and (type(value) is not int or value < 1):
        raise UserError(f"{name} must be a positive int or None, got {value!r}")
    try:
      self.shards = tuple(expand_shards(spec))
    except FileNotFoundError as e:
      raise UserError(str(e)) from None
    gzipped = [str(s) for s in self.shards if not s.name.lower().endswith(".tar")]
    if gzipped:
      raise UserError(f"shards {gzipped[:3]} are not plain .tar files: streaming needs member "
                      "offsets; prepare compressed shards with the image_text builder instead")
    self.max_size, self.max_pixels, self.undecoded = max_size, max_pixels, undecoded
    threads = num_threads or min(16, os.cpu_count() or 1)
    index = lambda s: load_index(s, index_dir, beside)  # noqa: E731
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      found = list(pool.map(index, self.shards))
    self._npy = [str(npy) for npy, _ in found]
    counts = np.array([meta["num_samples"] for _, meta in found], np.int64)
    self._ends = np.cumsum(counts)
    self.skipped = dict(sum((collections.Counter(m["skipped"]) for _, m in found),
                            collections.Counter()))
    self.skipped_examples = {}
    for _, meta in found:
      for reason, where in meta["skipped_examples"].items():
        kept = self.skipped_examples.setdefault(reason, [])
        kept.extend(where[:MAX_LOGGED - len(kept)])
    if not len(self):
      raise UserError(f"no usable sample in the {len(self.shards)} shards of {spec!r} "
                      f"(skipped: {self.skipped or 'none'})")
    digest = hashlib.sha1("\n".join(map(str, self.shards)).encode()).hexdigest()[:12]
    self._repr = (f"ShardSource(shards={len(self.shards)}, first={self.shards[0]}, "
                  f"sha1={digest}, records={len(self)}, max_size={max_size}, "
                  f"undecoded={undecoded})")
    self.read_skipped = collections.Counter()
    """{reason: count} of the distinct records this process found unreadable while reading."""
    self._bad, self._open, self._lock = {}, {}, threading.Lock()

  def __repr__(self) -> str:
    """What grain compares when an iterator state is restored: the shard list and record count."""
    return self._repr

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k not in ("_open", "_lock")}

  def __setstate__(self, state):
    self.__dict__.update(state, _open={}, _lock=threading.Lock())

  def summary(self) -> str:
    """One line: usable samples, and what the indexes left out by reason."""
    left = ", ".join(f"{r} {n}" for r, n in collections.Counter(self.skipped).most_common())
    return (f"{len(self.shards)} shards: {len(self)} samples, skipped "
            f"{sum(self.skipped.values())} ({left or 'none'})")

  def _rows(self, s: int) -> np.ndarray:
    """The index rows of shard s, memory-mapped; the MAX_MAPPED most recently used stay mapped
    (a process may read from 41,408 shards: an open file or a map for each would exhaust the
    process's limits)."""
    with self._lock:
      rows = self._open.pop(s, None)
      if rows is None:
        rows = np.load(self._npy[s], mmap_mode="r", allow_pickle=False)
      self._open[s] = rows  # the most recently used last
      while len(self._open) > MAX_MAPPED:
        self._open.pop(next(iter(self._open)))
    return rows

  def _read(self, index: int) -> dict:
    s = int(np.searchsorted(self._ends, index, side="right"))
    row = self._rows(s)[index - (int(self._ends[s - 1]) if s else 0)]
    fd = os.open(self.shards[s], os.O_RDONLY)  # positioned reads: threads never share an offset
    try:
      caption = os.pread(fd, int(row["caption_size"]), int(row["caption"]))
      data = os.pread(fd, int(row["image_size"]), int(row["image"]))
    finally:
      os.close(fd)
    caption = _caption(caption, bool(row["caption_json"]))
    if len(data) != int(row["image_size"]):
      raise _Bad("bad_shard")
    if self.undecoded and passes_undecoded(data, self.max_pixels):
      return {"image": data, "caption": caption.encode("utf-8"), "key": bytes(row["key"])}
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
      image = decode_image(data, self.max_size, self.max_pixels)
    return {"image": image, "caption": caption.encode("utf-8"), "key": bytes(row["key"])}

  def __getitem__(self, index: int) -> dict:
    """Sample `index` {'image': (h, w, 3) uint8, 'caption': bytes, 'key': bytes}; if it cannot be
    read, the next one that can (counted in read_skipped and logged)."""
    n = len(self)
    index = int(index)
    if not -n <= index < n:
      raise IndexError(f"record {index} out of range for {n} records")
    for attempt in range(min(n, 100)):
      i = (index + attempt) % n
      if i in self._bad:  # known bad in this process: not decoded, nor counted, again
        continue
      try:
        return self._read(i)
      except (_Bad, OSError) as e:
        reason = str(e) if isinstance(e, _Bad) else "unreadable_image_file"
        self._bad[i] = reason
        self.read_skipped[reason] += 1
        if self.read_skipped[reason] <= MAX_LOGGED or self.read_skipped[reason] % 1000 == 0:
          logging.warning("shards: skipped record %d (%s): %s; %d skipped for it in this process",
                          i, self._where(i), reason, self.read_skipped[reason])
    raise RuntimeError(f"records {index}..{index + 99} of {self!r} are all unreadable")

  def _where(self, index: int) -> str:
    s = int(np.searchsorted(self._ends, index, side="right"))
    return str(self.shards[s])
