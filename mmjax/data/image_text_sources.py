"""Reading the inputs of mmjax.data.image_text.ImageText: captions files, folders and tar shards.

  resolve_source(spec, ...)   what a source spec points at (a captions file with its columns and
                              image folder, or a list of tar shards), checked before anything is
                              written: missing paths and unusable columns raise here
  read_source(source)         the raw samples of a resolved source, in order: Item (a checked caption
                              and image bytes or an image path, still to be decoded) or
                              Skip (a sample already known to be bad, with one of SKIP_REASONS)
  expand_shards(spec)         shard paths from a path, glob, brace pattern or list of those

Captions files are CSV (.csv), TSV (.tsv) or JSON lines (.jsonl, .ndjson) in UTF-8; their image
column is one of PATH_COLUMNS and their caption column one of CAPTION_COLUMNS unless named. A row's
bytes that are not UTF-8 make it bad_caption (or bad_row, in the image path), as a .txt that is not
UTF-8 does in a shard; the other rows are kept. Tar shards are WebDataset shards as img2dataset
writes them (KEY.jpg + KEY.txt + KEY.json per sample), read as streams (tarfile "r|*"): nothing is
extracted to disk, and members that are not regular files or whose name is absolute, climbs out
with ".." or is not UTF-8 are skipped.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import pathlib
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence

__all__ = ["resolve_source", "read_source", "expand_shards", "is_shard_spec", "Source", "Item",
           "Skip", "SKIP_REASONS", "PATH_COLUMNS", "CAPTION_COLUMNS", "CAPTION_FORMATS",
           "SHARD_SUFFIXES", "IMAGE_EXTENSIONS", "MAX_IMAGE_BYTES"]

PATH_COLUMNS = ("path", "filepath", "file_path", "image", "image_path", "filename", "file")
CAPTION_COLUMNS = ("caption", "text", "title")
CAPTION_FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": "json", ".ndjson": "json"}
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
MAX_IMAGE_BYTES = 64 << 20
SKIP_REASONS = {
    "missing_image_file": "the captions file names an image file that does not exist",
    "unreadable_image_file": "the image file exists but could not be read",
    "undecodable_image": "not a decodable image (corrupt, truncated or unsupported format)",
    "image_too_large": f"an image file or shard member over {MAX_IMAGE_BYTES} bytes",
    "too_many_pixels": "more pixels than max_pixels (from the header, never decoded), or than "
                       "Pillow's own limit (2 * PIL.Image.MAX_IMAGE_PIXELS)",
    "unsupported_mode": "an image mode that has no 8-bit RGB conversion here (LAB, HSV, La, ...)",
    "missing_image": "no image path in the row, or no image member for a shard key",
    "missing_caption": "no caption field, or no .txt (nor json caption) for a shard key",
    "bad_caption": "a caption that is not text: a JSON non-string, or not UTF-8 (bytes in a "
                   "captions file or .txt, or a lone \\ud800-style escape in JSON)",
    "empty_caption": "an empty or whitespace-only caption",
    "bad_json": "a JSONL line, or a shard's .json read for the caption, that is not a JSON object",
    "bad_row": "a CSV/TSV row too short or unparsable, or an image path that is not a string "
               "(JSONL) or not UTF-8",
    "unsafe_member": "a shard member with an absolute path or '..' in it, or a non-UTF-8 name",
    "non_regular_member": "a shard member that is a link, device or fifo",
    "bad_shard": "a shard that is not a tar file or ends early (the samples before the break are "
                 "kept, the one being read is dropped)",
}
_SURROGATES = re.compile("[\ud800-\udfff]")  # what errors="surrogateescape" makes of bad bytes


def not_utf8(text: str) -> bool:
  """Whether text holds surrogates: bytes that were not UTF-8, or a lone \\ud800 escape in JSON."""
  return _SURROGATES.search(text) is not None


def _caption_problem(caption) -> str | None:
  """The skip reason for a caption as read, None if it is usable."""
  if caption is None:
    return "missing_caption"
  if not isinstance(caption, str) or not_utf8(caption):
    return "bad_caption"
  return None if caption.strip() else "empty_caption"


# ----------------------------------------------------------------------------------------------
# Resolving sources

def is_shard_spec(spec: str) -> bool:
  """A pattern (glob or braces) or a tar file; an existing path is taken literally."""
  if os.path.exists(spec):
    return os.path.isfile(spec) and spec.lower().endswith(SHARD_SUFFIXES)
  return any(c in spec for c in "*?[{") or spec.lower().endswith(SHARD_SUFFIXES)


def _expand_braces(pattern: str) -> list[str]:
  """'a{0..2}b{x,y}' -> ['a0bx', 'a0by', 'a1bx', ...]; zero padding as in {000..009} is kept."""
  match = re.search(r"\{([^{}]*)\}", pattern)
  if not match:
    return [pattern]
  head, body, tail = pattern[:match.start()], match.group(1), pattern[match.end():]
  rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
  if rng:
    lo, hi = rng.groups()
    width = max(len(lo), len(hi)) if (lo[0] == "0" and len(lo) > 1) or (hi[0] == "0"
                                                                        and len(hi) > 1) else 0
    step = 1 if int(hi) >= int(lo) else -1
    options = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
  elif "," in body:
    options = body.split(",")
  else:
    options = ["{" + body + "}"]  # not an expansion: keep it literally
  return [head + opt + rest for opt in options for rest in _expand_braces(tail)]


def expand_shards(spec: str | Sequence[str]) -> list[pathlib.Path]:
  """Shard paths from a path, glob, brace pattern or list of those; FileNotFoundError naming each
  path that does not exist or pattern that matches nothing."""
  specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
  paths, missing = [], []
  for s in specs:
    for piece in _expand_braces(os.path.expanduser(os.fspath(s))):
      if os.path.isfile(piece):
        paths.append(piece)
      elif any(c in piece for c in "*?["):
        found = sorted(p for p in glob.glob(piece) if os.path.isfile(p))
        paths.extend(found)
        if not found:
          missing.append(f"{piece} (pattern matches no file)")
      else:
        missing.append(piece)
  if missing:
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise FileNotFoundError(f"tar shards not found: {', '.join(missing[:5])}{more} (from source "
                            f"{spec!r})")
  return [pathlib.Path(p).resolve() for p in paths]


@dataclasses.dataclass(frozen=True)
class Source:
  """A resolved source: what resolve_source found, what read_source reads."""
  kind: str
  """"captions" or "shards"."""
  paths: tuple[pathlib.Path, ...]
  """The captions file (one), or the tar shards in order."""
  image_root: pathlib.Path | None = None
  """The folder relative image paths of a captions file are taken from."""
  columns: tuple[str | None, str | None] = (None, None)
  """(image, caption) column names: CSV/TSV, the header's; JSONL, the user's (None: look up)."""


def resolve_source(spec, *, image_root=None, image_column=None, caption_column=None) -> Source:
  """What a source spec points at, checked: missing paths and unusable columns raise here.

  Relative image paths of a captions file are taken from image_root, else from its folder;
  image_column / caption_column name its columns (else PATH_COLUMNS / CAPTION_COLUMNS are tried).
  """
  if not isinstance(spec, str) or is_shard_spec(spec):
    return Source("shards", tuple(expand_shards(spec)))
  path = pathlib.Path(spec)
  if path.is_dir():
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in CAPTION_FORMATS)
    if len(found) > 1:
      names = ", ".join(p.name for p in found)
      raise ValueError(f"folder {path} holds several captions files ({names}); pass the one to "
                       "use as source")
    if not found:
      shards = sorted(p for p in path.iterdir() if p.name.lower().endswith(SHARD_SUFFIXES))
      if shards:
        return Source("shards", tuple(p.resolve() for p in shards))
      raise FileNotFoundError(f"folder {path} holds no captions file "
                              f"({', '.join(CAPTION_FORMATS)}) and no .tar shards")
    path = found[0]
  elif not path.exists():
    where = "" if path.parent.is_dir() else f" (its folder {path.parent} does not exist either)"
    raise FileNotFoundError(f"image-text source {path} does not exist{where}")
  if path.suffix.lower() not in CAPTION_FORMATS:
    raise ValueError(f"source {path}: expected a captions file ({', '.join(CAPTION_FORMATS)}), a "
                     f"folder, or tar shards ({', '.join(SHARD_SUFFIXES)})")
  root = pathlib.Path(image_root) if image_root else path.parent
  if not root.is_dir():
    raise FileNotFoundError(f"image folder {root} (image_root) does not exist")
  columns = _check_columns(path, image_column, caption_column)
  if CAPTION_FORMATS[path.suffix.lower()] == "json":  # keys are looked up in every object
    columns = (image_column, caption_column)
  return Source("captions", (path.resolve(),), root.resolve(), columns)


def _pick(names, wanted: str | None, candidates: Sequence[str]) -> str | None:
  """The first of names equal (case-insensitively) to `wanted`, else to one of candidates."""
  lower = {str(n).strip().lower(): n for n in names}
  for c in ([wanted] if wanted else candidates):
    if c.lower() in lower:
      return lower[c.lower()]
  return None


def _check_columns(path: pathlib.Path, image_column, caption_column):
  """Reads the header (or the first JSON object) and names what is missing."""
  if CAPTION_FORMATS[path.suffix.lower()] == "json":
    names = None
    with open(path, "rb") as f:
      for line in f:
        try:
          obj = json.loads(line.decode("utf-8-sig", "surrogateescape"))
        except ValueError:
          continue
        if isinstance(obj, dict):
          names = list(obj)
          break
    if names is None:
      raise ValueError(f"captions file {path} holds no JSON object")
  else:
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
      names = next(csv.reader(f, delimiter=CAPTION_FORMATS[path.suffix.lower()]), None)
    if not names:
      raise ValueError(f"captions file {path} is empty (expected a header row)")
  image, caption = _pick(names, image_column, PATH_COLUMNS), _pick(names, caption_column,
                                                                    CAPTION_COLUMNS)
  if image is None or caption is None:
    expected = (f"image column {image_column!r}" if image_column else
                f"an image column (one of {', '.join(PATH_COLUMNS)})") + " and " + (
                    f"caption column {caption_column!r}" if caption_column else
                    f"a caption column (one of {', '.join(CAPTION_COLUMNS)})")
    raise ValueError(f"captions file {path}: found columns {names}; expected {expected}. Name "
                     "them with image_column= and caption_column=")
  return image, caption


# ----------------------------------------------------------------------------------------------
# Reading raw samples: each reader yields Item (to decode) or Skip (already known to be bad)

@dataclasses.dataclass
class Skip:
  """A sample known to be bad before decoding."""
  reason: str
  """One of SKIP_REASONS."""
  where: str
  """The file and line, or shard and member, for the message."""
  key: str | None = None
  """The image id, which decides the split; None: counted in the first split reading the input."""


@dataclasses.dataclass
class Item:
  """A raw sample, to be checked and decoded."""
  uid: str
  """Unique within the split (the tfds example key)."""
  key: str
  """The image id (feature 'key'): the path as written in the captions file, or the shard key."""
  where: str
  """The file and line, or shard and member, for messages."""
  caption: str
  """The caption, checked (_caption_problem) and stripped."""
  image: object
  """The image: bytes (from a shard), or a pathlib.Path to read."""


def read_source(source: Source) -> Iterator[Item | Skip]:
  """The raw samples of a resolved source, in order: one Item per usable row or shard key, one
  Skip per sample already known to be bad."""
  if source.kind == "shards":
    return _read_shards(source)
  if CAPTION_FORMATS[source.paths[0].suffix.lower()] == "json":
    return _read_jsonl(source)
  return _read_table(source)


def _read_table(inp: Source) -> Iterator[Item | Skip]:
  path = inp.paths[0]
  with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
    reader = csv.reader(f, delimiter=CAPTION_FORMATS[path.suffix.lower()])
    header = next(reader)  # the columns were found in this same row by _check_columns
    col_image, col_caption = header.index(inp.columns[0]), header.index(inp.columns[1])
    while True:
      try:
        row = next(reader)
      except StopIteration:
        return
      except csv.Error:
        yield Skip("bad_row", f"{path.name}:{reader.line_num}")
        continue
      where = f"{path.name}:{reader.line_num}"
      if not any(cell.strip() for cell in row):
        continue
      if len(row) <= max(col_image, col_caption):
        yield Skip("bad_row", where)
        continue
      yield _file_item(str(reader.line_num), row[col_image], row[col_caption], inp, where)


def _read_jsonl(inp: Source) -> Iterator[Item | Skip]:
  path = inp.paths[0]
  with open(path, "rb") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path.name}:{n}"
      try:
        obj = json.loads(line.decode("utf-8-sig", "surrogateescape"))  # non-UTF-8: per field
      except ValueError:
        obj = None
      if not isinstance(obj, dict):
        yield Skip("bad_json", where)
        continue
      image_key = _pick(obj, inp.columns[0], PATH_COLUMNS)
      caption_key = _pick(obj, inp.columns[1], CAPTION_COLUMNS)
      image = obj.get(image_key) if image_key is not None else None
      if image is not None and not isinstance(image, str):
        yield Skip("bad_row", where)
        continue
      yield _file_item(str(n), image or "", obj.get(caption_key) if caption_key else None, inp,
                       where)


def _file_item(uid, rel: str, caption, inp: Source, where: str) -> Item | Skip:
  rel = rel.strip()
  if not rel:
    return Skip("missing_image", where, key=f"row:{uid}")
  if not_utf8(rel):
    return Skip("bad_row", where)
  if problem := _caption_problem(caption):
    return Skip(problem, f"{where} ({rel})", key=rel)
  path = pathlib.Path(rel) if os.path.isabs(rel) else inp.image_root / rel
  return Item(uid, rel, f"{where} ({rel})", caption.strip(), path)


def _member_key(name: str) -> tuple[str, str] | None:
  """(key, extension) of a shard member as WebDataset splits it: the extension starts at the first
  dot of the file name. None for a name that is absolute or climbs out with '..'."""
  if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
    return None
  parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
  if not parts or ".." in parts or not_utf8(name):  # tarfile keeps bad bytes as surrogates
    return None
  stem, _, ext = parts[-1].partition(".")
  return "/".join(parts[:-1] + [stem]), ext.lower()


def _read_shards(inp: Source) -> Iterator[Item | Skip]:
  for index, shard in enumerate(inp.paths):
    key, files, count = None, {}, 0
    try:
      with open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:  # a stream: members are read in order, never extracted
          where = f"{shard.name}:{member.name}"
          if member.isdir():
            continue
          if not member.isreg():
            yield Skip("non_regular_member", where)
            continue
          split = _member_key(member.name)
          if split is None:
            yield Skip("unsafe_member", where)
            continue
          if split[1] not in IMAGE_EXTENSIONS + ("txt", "json"):
            continue
          if split[0] != key:
            if key is not None:
              yield _shard_item(f"{index}:{count}", key, files, shard.name)
              count += 1
            key, files = split[0], {}
          if member.size > MAX_IMAGE_BYTES:
            files[split[1]] = None
          else:
            files[split[1]] = tar.extractfile(member).read()
        # A stream cut at a header ends quietly; a whole plain .tar ends with a zero block.
        size = shard.stat().st_size
        if shard.suffix.lower() == ".tar" and tar.offset + tarfile.BLOCKSIZE > size:
          raise tarfile.ReadError("it ends without the end-of-archive block (truncated?)")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
      yield Skip("bad_shard", f"{shard}: {e}")
      key = None  # the sample being read when the shard broke is dropped with it
    if key is not None:
      yield _shard_item(f"{index}:{count}", key, files, shard.name)


def _shard_item(uid: str, key: str, files: dict, shard_name: str) -> Item | Skip:
  where = f"{shard_name}:{key}"
  ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
  if ext is None:
    return Skip("missing_image", where, key)
  if files[ext] is None:
    return Skip("image_too_large", where, key)
  if files.get("txt") is not None:
    try:
      caption = files["txt"].decode("utf-8")
    except UnicodeDecodeError:
      return Skip("bad_caption", where, key)
  elif files.get("json") is not None:
    try:
      meta = json.loads(files["json"])
    except ValueError:
      meta = None
    if not isinstance(meta, dict):
      return Skip("bad_json", where, key)
    caption = meta.get("caption")
  else:
    caption = None
  if problem := _caption_problem(caption):
    return Skip(problem, where, key)
  return Item(uid, key, where, caption.strip(), files[ext])


