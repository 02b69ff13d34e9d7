"""Text tokenizers: a byte-level one that needs no vocabulary, a word-level one over a closed
vocabulary (the embedded datasets' captions), and CLIP's BPE tokenizer.

  ByteTokenizer()            ids 0 = pad, 1..256 = UTF-8 bytes (byte b -> b + 1), 257 sot, 258 eot
  WordTokenizer(words)       ids 0 = pad, 1 = unknown word, 2..V+1 = the V words, V+2 sot, V+3 eot
  ClipTokenizer(path=None)   CLIP's byte-level BPE (Radford et al. 2021) read from
                             bpe_simple_vocab_16e6.txt.gz: 49408 ids, sot 49406, eot 49407
  find_bpe_vocab(path=None)  where ClipTokenizer finds its merges file
  clip_vocab_files(gz, dir)  writes vocab.json + merges.txt for Hugging Face's CLIPTokenizer

Calling a tokenizer on a string or a list of n strings returns np.int32 (n, context_length), laid
out like OpenCLIP's tokenize(truncate=True): [sot, tokens..., eot, 0, 0, ...]. A text too long for
the context is cut and its last token replaced by eot, so every row holds exactly one eot. eot is
the largest id, so a text encoder pools at argmax(tokens) as OpenAI's CLIP does.

    tokenizer = ClipTokenizer()                      # or ByteTokenizer() for the embedded demo
    tokens = tokenizer(["a photo of a cat", "a dog"])  # (2, 77) int32
    tokenizer.decode(tokens[0])                      # 'a photo of a cat'
"""
from __future__ import annotations

import gzip
import html
import importlib.util
import json
import os
import pathlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

from mmjax.errors import UserError

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_ENV_VAR = "MMJAX_BPE_VOCAB"
# Installed packages that ship BPE_FILENAME next to their __init__.py. They are located with
# importlib.util.find_spec and never imported (their __init__ imports torch).
BPE_PACKAGES = ("open_clip", "clip")
CLIP_NUM_MERGES = 49152 - 256 - 2  # merges the standard vocabulary uses: 48894
DEFAULT_CONTEXT_LENGTH = 77

__all__ = ["ByteTokenizer", "WordTokenizer", "ClipTokenizer", "find_bpe_vocab", "clip_vocab_files", "BPE_FILENAME",
           "BPE_ENV_VAR"]

# OpenAI's pre-tokenizer: special tokens, English contractions, runs of letters, single digits,
# runs of other non-space characters. Needs the `regex` package for \p{L} and \p{N}.
_PIECE_PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"""
                  r"""|[^\s\p{L}\p{N}]+""")
_SOT, _EOT, _EOW = "<|startoftext|>", "<|endoftext|>", "</w>"


def _check_context_length(context_length: int) -> int:
  if int(context_length) < 2:
    raise UserError(f"context_length={context_length}: must be at least 2, room for the "
                     "start-of-text and end-of-text tokens")
  return int(context_length)


def _as_list(texts: str | Sequence[str]) -> list[str]:
  if isinstance(texts, str):
    return [texts]
  texts = list(texts)
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"texts[{i}] is {type(text).__name__}: expected str")
  return texts


def _pack(rows: Iterable[list[int]], sot: int, eot: int, context_length: int,
          pad: int = 0) -> np.ndarray:
  """[sot] + ids + [eot] per row, cut to context_length with eot kept last, padded with `pad`."""
  rows = list(rows)
  out = np.full((len(rows), context_length), pad, np.int32)
  for i, ids in enumerate(rows):
    seq = [sot, *ids[:context_length - 2], eot]
    out[i, :len(seq)] = seq
  return out


def _strip_special(ids: Iterable[int], sot: int, eot: int) -> list[int]:
  """Drops a leading sot and everything from the first eot on (the eot and the padding after it)."""
  ids = [int(i) for i in np.asarray(ids).reshape(-1)]
  if ids and ids[0] == sot:
    ids = ids[1:]
  return ids[:ids.index(eot)] if eot in ids else ids


class _Tokenizer:
  """What every tokenizer here shares: texts -> self.encode(text) -> packed (n, context_length) ids.
  Subclasses define encode(text) -> list[int], context_length, sot_token_id and eot_token_id."""
  context_length: int
  sot_token_id: int
  eot_token_id: int

  def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
    """np.int32 (n, context_length): [sot, ids..., eot, 0...] per text, eot kept when truncated."""
    length = _check_context_length(
        self.context_length if context_length is None else context_length)
    return _pack(map(self.encode, _as_list(texts)), self.sot_token_id, self.eot_token_id, length)


class ByteTokenizer(_Tokenizer):
  """UTF-8 bytes as tokens: no vocabulary file, every text round-trips.

  Ids: 0 = pad, 1..256 = the bytes (byte b -> id b + 1), 257 = start-of-text, 258 = end-of-text,
  vocab_size = 259. Truncation cuts bytes, so it may split a multi-byte character; decode() shows a
  cut character as U+FFFD.
  """
  pad_token_id = 0
  sot_token_id = 257
  eot_token_id = 258
  vocab_size = 259

  def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH):
    self.context_length = _check_context_length(context_length)

  def encode(self, text: str) -> list[int]:
    """Ids of one text, without sot / eot and untruncated."""
    return [b + 1 for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The text of one row of ids (sot, eot, padding and other special ids are dropped)."""
    ids = _strip_special(ids, self.sot_token_id, self.eot_token_id)
    return bytes(i - 1 for i in ids if 1 <= i <= 256).decode("utf-8", errors="replace")


_WORD_PATTERN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class WordTokenizer(_Tokenizer):
  """Lower-cased words and punctuation marks from a fixed vocabulary, one id each.

  For small closed-vocabulary corpora (mmjax.data.shapes.VOCABULARY): a caption is a dozen tokens
  instead of ~45 bytes, so the text tower is cheaper and each word is one embedding from the start.
  Ids: 0 = pad, 1 = a word not in the vocabulary, 2..V+1 = vocabulary[0..V-1], V+2 = start-of-text,
  V+3 = end-of-text (the largest id, as in CLIP); vocab_size = V + 4. Texts are lower-cased and split
  into runs of [a-z0-9] and single other non-space characters ("mid-sized." -> mid - sized .).
  """
  pad_token_id = 0
  unk_token_id = 1

  def __init__(self, vocabulary: Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH):
    words = list(vocabulary)
    if not words:
      raise ValueError("WordTokenizer needs a non-empty vocabulary")
    bad = [w for w in words if not isinstance(w, str) or self.split(w) != [w]]
    if bad:
      raise ValueError(f"vocabulary entries must be single lower-case words or punctuation marks "
                       f"(as WordTokenizer.split gives them); got {bad[:5]!r}")
    if len(set(words)) != len(words):
      dup = sorted({w for w in words if words.count(w) > 1})
      raise ValueError(f"vocabulary has repeated entries: {dup[:5]!r}")
    self.vocab = words
    self._ids = {w: i + 2 for i, w in enumerate(words)}
    self.sot_token_id = len(words) + 2
    self.eot_token_id = len(words) + 3
    self.vocab_size = len(words) + 4
    self.context_length = _check_context_length(context_length)

  @staticmethod
  def split(text: str) -> list[str]:
    """The words and punctuation marks of a text, lower-cased."""
    return _WORD_PATTERN.findall(text.lower())

  def encode(self, text: str) -> list[int]:
    """Ids of one text, without sot / eot and untruncated; unknown words -> unk_token_id."""
    return [self._ids.get(w, self.unk_token_id) for w in self.split(text)]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The words of one row of ids joined by spaces (unknown words shown as <unk>)."""
    ids = _strip_special(ids, self.sot_token_id, self.eot_token_id)
    return " ".join(self.vocab[i - 2] if 2 <= i < self.sot_token_id else "<unk>"
                    for i in ids if i != self.pad_token_id)


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2 / CLIP byte -> printable character map.

  Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the other 68 bytes
  (controls, space, soft hyphen) map to chr(256), chr(257), ... in byte order. BPE then works on
  strings of printable characters with no whitespace, one character per byte. The dict's order
  (the printable bytes first, then the other 68) is the order of the first 256 vocabulary ids.
  """
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  table = {b: chr(b) for b in printable}
  extra = [b for b in range(256) if b not in table]
  table.update({b: chr(256 + n) for n, b in enumerate(extra)})
  return table


def find_bpe_vocab(path: str | os.PathLike | None = None) -> pathlib.Path:
  """The merges file ClipTokenizer reads: bpe_simple_vocab_16e6.txt.gz (or .txt).

  Looks, in order, at: `path` (a file, or a folder holding BPE_FILENAME); the file or folder named
  by the environment variable MMJAX_BPE_VOCAB; the folders of the installed packages open_clip
  (pip install open_clip_torch) and clip (OpenAI's), located without importing them. An explicit
  path or variable that names nothing is an error rather than a reason to look further.
  """
  def resolve(candidate: str | os.PathLike) -> pathlib.Path:
    candidate = pathlib.Path(candidate).expanduser()
    return candidate / BPE_FILENAME if candidate.is_dir() else candidate

  if path is not None:
    found = resolve(path)
    if not found.is_file():
      raise FileNotFoundError(f"BPE vocabulary {found} (from the path argument) does not exist")
    return found
  env = os.environ.get(BPE_ENV_VAR)
  if env:
    found = resolve(env)
    if not found.is_file():
      raise FileNotFoundError(f"BPE vocabulary {found} (from ${BPE_ENV_VAR}) does not exist")
    return found
  searched = []
  for package in BPE_PACKAGES:
    try:
      spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
      spec = None
    if spec is None:
      searched.append(f"package {package!r} (not installed)")
      continue
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
      folders = [os.path.dirname(spec.origin)]
    for folder in folders:
      found = pathlib.Path(folder) / BPE_FILENAME
      if found.is_file():
        return found
      searched.append(str(found))
  raise FileNotFoundError(
      f"CLIP BPE vocabulary {BPE_FILENAME} not found. Looked at: no path argument; "
      f"${BPE_ENV_VAR} not set; " + "; ".join(searched) + ". Provide it with "
      f"ClipTokenizer(path), by setting {BPE_ENV_VAR}=/path/to/{BPE_FILENAME}, or by installing a "
      "package that ships it (open_clip_torch). The file is "
      "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz")


def _read_merges(path: pathlib.Path, num_merges: int | None) -> list[tuple[str, str]]:
  """Merge pairs from a merges file: a header line, then one 'a b' pair per line."""
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")[1:]
  while lines and not lines[-1].strip():
    lines.pop()
  wanted = CLIP_NUM_MERGES if num_merges is None else int(num_merges)
  if num_merges is not None and not 0 <= wanted <= len(lines):
    raise ValueError(f"num_merges={num_merges}: {path} has {len(lines)} merges")
  merges = []
  for n, line in enumerate(lines[:wanted]):
    parts = line.split()
    if len(parts) != 2:
      raise ValueError(f"{path}, line {n + 2}: expected a merge 'a b', got {line!r}")
    merges.append((parts[0], parts[1]))
  return merges


def _clip_vocab(merges: Sequence[tuple[str, str]]) -> list[str]:
  """Token strings in id order: 256 bytes, 256 bytes + '</w>', one per merge, sot, eot."""
  chars = list(_bytes_to_unicode().values())
  return [*chars, *(c + _EOW for c in chars), *(a + b for a, b in merges), _SOT, _EOT]


class ClipTokenizer(_Tokenizer):
  """CLIP's tokenizer: cleaning, a regex pre-tokenizer and byte-level BPE (Radford et al. 2021).

  Text is cleaned as OpenAI's simple_tokenizer does (ftfy.fix_text, HTML unescaped twice,
  whitespace runs collapsed, lower-cased), split into pieces (contractions, letter runs, single
  digits, punctuation runs), each piece's UTF-8 bytes mapped to printable characters and merged by
  BPE with '</w>' marking the end of a word.

  path: the merges file (see find_bpe_vocab for where it is looked for when None).
  num_merges: how many merges to read (default: the standard 48894, or all of a shorter file only
    if given explicitly). The vocabulary is 256 bytes + 256 bytes + '</w>' + merges + sot + eot, so
    the standard file gives vocab_size 49408, sot 49406, eot 49407.
  Padding is id 0 (as in OpenCLIP), which is also the token '!': decode() stops at the eot.
  '<|startoftext|>' / '<|endoftext|>' written in a text become the special ids, as in OpenAI's
  tokenizer and Hugging Face's (OpenCLIP renamed its specials, so there they stay plain text).
  """
  pad_token_id = 0

  def __init__(self, path: str | os.PathLike | None = None,
               context_length: int = DEFAULT_CONTEXT_LENGTH, num_merges: int | None = None):
    try:
      import ftfy  # pylint: disable=import-outside-toplevel
      import regex  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f"ClipTokenizer needs the packages ftfy and regex ({e}): "
                        "pip install ftfy regex") from e
    self._fix_text = ftfy.fix_text
    self._pieces = regex.compile(_PIECE_PATTERN, regex.IGNORECASE)
    self.context_length = _check_context_length(context_length)
    self.path = find_bpe_vocab(path)
    self.merges = _read_merges(self.path, num_merges)
    self.vocab = _clip_vocab(self.merges)                     # id -> token
    self.encoder = {token: i for i, token in enumerate(self.vocab)}  # a later duplicate wins
    self._ranks = {pair: rank for rank, pair in enumerate(self.merges)}
    self._byte_chars = _bytes_to_unicode()
    self._char_bytes = {c: b for b, c in self._byte_chars.items()}
    self.sot_token_id = self.encoder[_SOT]
    self.eot_token_id = self.encoder[_EOT]
    self.vocab_size = len(self.vocab)
    self._cache: dict[str, list[int]] = {}

  def clean(self, text: str) -> str:
    """OpenAI's cleaning: ftfy.fix_text, html.unescape twice, whitespace runs -> ' ', lower case."""
    text = html.unescape(html.unescape(self._fix_text(text)))
    return " ".join(text.split()).lower()

  def _bpe(self, piece: str) -> list[int]:
    """Ids of one byte-mapped piece: repeatedly merge the adjacent pair of lowest merge rank."""
    if piece in self._cache:
      return self._cache[piece]
    word = [*piece[:-1], piece[-1] + _EOW]
    while len(word) > 1:
      pair = min(zip(word, word[1:]), key=lambda p: self._ranks.get(p, len(self._ranks)))
      if pair not in self._ranks:
        break
      merged, i = [], 0
      while i < len(word):  # merge every non-overlapping occurrence, left to right
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    ids = [self.encoder[token] for token in word]
    if len(self._cache) < 100_000:
      self._cache[piece] = ids
    return ids

  def encode(self, text: str) -> list[int]:
    """Ids of one text, without the added sot / eot and untruncated."""
    ids = []
    for piece in self._pieces.findall(self.clean(text)):
      if piece in (_SOT, _EOT):
        ids.append(self.encoder[piece])
      else:
        ids.extend(self._bpe("".join(self._byte_chars[b] for b in piece.encode("utf-8"))))
    return ids

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The (cleaned) text of one row of ids: a leading sot is dropped and decoding stops at eot."""
    out = bytearray()
    for i in _strip_special(ids, self.sot_token_id, self.eot_token_id):
      token = self.vocab[i]
      if token in (_SOT, _EOT):
        continue
      word_end = token.endswith(_EOW)
      out.extend(self._char_bytes[c] for c in (token[:-len(_EOW)] if word_end else token))
      if word_end:
        out.extend(b" ")
    return out.decode("utf-8", errors="replace").strip()


def clip_vocab_files(bpe_gz_path: str | os.PathLike, out_dir: str | os.PathLike,
                     num_merges: int | None = None) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes vocab.json ({token: id}) and merges.txt ('#version: 0.2' + 'a b' lines) to out_dir.

  These are the files Hugging Face's CLIPTokenizer reads; they hold the same vocabulary as
  ClipTokenizer(bpe_gz_path, num_merges=num_merges). Returns (vocab_path, merges_path).
  """
  merges = _read_merges(find_bpe_vocab(bpe_gz_path), num_merges)
  vocab = {token: i for i, token in enumerate(_clip_vocab(merges))}
  out_dir = pathlib.Path(out_dir).expanduser()
  out_dir.mkdir(parents=True, exist_ok=True)
  vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
  vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
  merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                         encoding="utf-8")
  return vocab_path, merges_path
