"""Tokenizers: ClipTokenizer against Hugging Face's CLIPTokenizer, ByteTokenizer, and their errors.

The real bpe_simple_vocab_16e6.txt.gz is not available offline, so the module fixture learns a
merges file in the same format (header line, then 'a b' merges) from Python's own documentation
(pydoc_data.topics) plus generated multilingual text, and builds the peer from the vocab.json and
merges.txt that clip_vocab_files writes from it. Both sides see the same cleaned text: ours cleans
as OpenAI does (ftfy, HTML unescaping), the peer's normaliser differs (NFC, no HTML unescaping in
transformers 5; ftfy without unescaping in 4), so the peer is given ClipTokenizer.clean(text).
"""
import collections
import gzip
import heapq
import random
import sys

import numpy as np
import pytest

from mmjax.data import tokenizers as tok_lib
from mmjax.data.tokenizers import ByteTokenizer, ClipTokenizer, clip_vocab_files, find_bpe_vocab

NUM_MERGES = 3000
CONTEXT = 77

_WORDS = tuple(("café naïve résumé ångström straße façade jalapeño smörgåsbord crème brûlée "
                "über déjà vu señor zoë coöperate 東京 北京 こんにちは ありがとう 世界 привет мир спасибо "
                "مرحبا שלום γειά σου κόσμε नमस्ते 안녕하세요 ¿qué? ¡hola! 🐱 🐶 👍🏽 🇫🇷 ❤️ ✨ 😂").split())


def _corpus(rng):
  """Python's documentation plus generated sentences of multilingual words, digits, punctuation."""
  from pydoc_data.topics import topics  # pylint: disable=import-outside-toplevel
  made = [" ".join(rng.choice(_WORDS) for _ in range(12)) + f" {rng.randint(0, 10**6)}."
          for _ in range(400)]
  return " ".join(topics.values()) + " " + " ".join(made)


def _learn_merges(word_counts, num_merges):
  """Classic BPE learning (Sennrich et al. 2016): repeatedly merge the most frequent adjacent pair.

  word_counts: {byte-mapped word: count}. Words end in '</w>'; a heap with lazy deletion keeps the
  most frequent pair (ties broken by the pair's strings) and only words holding it are re-counted.
  """
  words = [[*w[:-1], w[-1] + "</w>"] for w in word_counts]
  freqs = list(word_counts.values())
  pair_freq, pair_words = collections.Counter(), collections.defaultdict(set)

  def count(i, sign, changed):
    for pair in zip(words[i], words[i][1:]):
      pair_freq[pair] += sign * freqs[i]
      pair_words[pair].add(i)
      changed.add(pair)

  for i in range(len(words)):
    count(i, 1, set())
  heap = [(-f, pair) for pair, f in pair_freq.items()]
  heapq.heapify(heap)
  merges = []
  while heap and len(merges) < num_merges:
    f, pair = heapq.heappop(heap)
    if pair_freq[pair] != -f or f == 0:
      continue  # stale entry
    merges.append(pair)
    changed = set()
    for i in pair_words.pop(pair):
      if pair not in zip(words[i], words[i][1:]):
        continue
      count(i, -1, changed)
      merged, j = [], 0
      while j < len(words[i]):
        if tuple(words[i][j:j + 2]) == pair:
          merged.append(pair[0] + pair[1])
          j += 2
        else:
          merged.append(words[i][j])
          j += 1
      words[i] = merged
      count(i, 1, changed)
    for q in changed:
      if pair_freq[q] > 0:
        heapq.heappush(heap, (-pair_freq[q], q))
  return merges


def _test_texts(rng, corpus):
  """A few hundred varied strings: fixed edge cases, corpus slices (some > 77 tokens), mixtures."""
  fixed = [
      "a photo of a cat", "A Photo Of A CAT", "HeLLo WoRLD", "I'LL say it's DON'T we're they've",
      "Café naïve résumé Ångström straße", "你好，世界！", "こんにちは世界", "Привет, мир!",
      "مرحبا بالعالم", "🐱👍🏽🇫🇷 emoji!!", "❤️✨😂😂😂", "3.14159 1,000,000 2024-01-01 42nd 007",
      "&amp;amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;x&#39; a&nbsp;b caf&eacute;",
      "<b>&amp;</b> <i>tag</i>", "  lots   of \t\t whitespace \n\n here  ", "!!!???...,,,;;;",
      "don''t ''s 's s' '", "â€œmojibakeâ€\x9d", "ﬁne ﬂow ＡＢＣ１２３", "e\u0301 \u00e9",
      "<|startoftext|>hi<|endoftext|>", "", "   ", "a", "!", "aaaaaaaaaaaaaaaaaaaaaa",
      "x" * 300, "word " * 100, "0123456789" * 12, "tab\tseparated\tvalues\r\nline",
      "under_score snake_case CamelCase kebab-case e-mail@example.com http://x.org/a?b=c&d=e",
  ]
  pool = _WORDS + tuple(corpus[i:i + rng.randint(1, 12)] for i in range(0, 20000, 97))
  pool += ("&amp;", "&gt;", "&#233;", "  ", "\t", "\n", "!?", "...", "'s", "'LL", "42", "😂")
  mixed = []
  for _ in range(150):
    parts = [rng.choice(pool) for _ in range(rng.randint(1, 20))]
    text = rng.choice(("", " ", "  ")).join(parts)
    mixed.append("".join(c.upper() if rng.random() < 0.2 else c for c in text))
  slices = []
  for _ in range(150):
    start = rng.randrange(len(corpus) - 2000)
    slices.append(corpus[start:start + rng.choice((20, 80, 300, 1500))])
  return fixed + mixed + slices


@pytest.fixture(scope="module")
def clip_setup(tmp_path_factory):
  """(ClipTokenizer, Hugging Face peer, merges, texts) on a 3000-merge vocabulary learned here."""
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("ftfy")
  regex = pytest.importorskip("regex")
  rng = random.Random(0)
  corpus = _corpus(rng)
  byte_chars = tok_lib._bytes_to_unicode()  # pylint: disable=protected-access
  pieces = regex.findall(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                         corpus.lower())
  counts = collections.Counter("".join(byte_chars[b] for b in p.encode()) for p in pieces)
  merges = _learn_merges(counts, NUM_MERGES)
  folder = tmp_path_factory.mktemp("bpe")
  gz = folder / tok_lib.BPE_FILENAME
  with gzip.open(gz, "wt", encoding="utf-8") as f:
    f.write("#version: test merges\n" + "".join(f"{a} {b}\n" for a, b in merges))
  clip_vocab_files(gz, folder / "hf")
  peer = transformers.CLIPTokenizer.from_pretrained(str(folder / "hf"))
  return ClipTokenizer(gz), peer, merges, _test_texts(rng, corpus)


def test_learned_merges_are_valid(clip_setup):
  tokenizer, _, merges, _ = clip_setup
  assert len(merges) == NUM_MERGES
  known = set(tokenizer.vocab[:512])
  for a, b in merges:
    assert a in known and b in known, (a, b)
    known.add(a + b)
  assert tokenizer.vocab_size == 512 + NUM_MERGES + 2
  assert (tokenizer.sot_token_id, tokenizer.eot_token_id) == (512 + NUM_MERGES, 513 + NUM_MERGES)


def test_matches_hf_untruncated(clip_setup):
  tokenizer, peer, _, texts = clip_setup
  assert len(texts) >= 300
  cleaned = [tokenizer.clean(t) for t in texts]
  expected = peer(cleaned, add_special_tokens=False)["input_ids"]
  ours = [tokenizer.encode(t) for t in texts]
  for text, a, b in zip(texts, ours, expected):
    assert a == b, text
  merged = sum(i >= 512 for ids in ours for i in ids) / sum(map(len, ours))
  assert merged > 0.5  # most tokens are learned merges, so the BPE itself is exercised
  assert max(map(len, ours)) > 3 * CONTEXT


def test_matches_hf_padded_and_truncated(clip_setup):
  tokenizer, peer, _, texts = clip_setup
  enc = peer([tokenizer.clean(t) for t in texts], padding="max_length", max_length=CONTEXT,
             truncation=True)
  # The peer pads with eot and masks it; OpenCLIP's layout (and ours) pads with 0.
  expected = np.where(np.array(enc["attention_mask"]) == 1, np.array(enc["input_ids"]), 0)
  got = tokenizer(texts)
  assert got.dtype == np.int32 and got.shape == (len(texts), CONTEXT)
  np.testing.assert_array_equal(got, expected)
  assert (got[:, -1] == tokenizer.eot_token_id).sum() > 10  # truncated rows end in eot


def test_plain_text_matches_hf_without_cleaning(clip_setup):
  """Text that ftfy and HTML unescaping leave alone needs no pre-cleaning for the peer."""
  tokenizer, peer, _, texts = clip_setup
  plain = [t for t in texts
           if t.isascii() and "&" not in t and all(c.isprintable() or c.isspace() for c in t)]
  assert len(plain) > 100
  expected = peer(plain, add_special_tokens=False)["input_ids"]
  assert [tokenizer.encode(t) for t in plain] == expected


def test_clean_and_byte_ids(clip_setup):
  tokenizer = clip_setup[0]
  assert tokenizer.clean("  Hello&amp;amp;  World \n") == "hello& world"
  assert tokenizer.clean("â€œmojibakeâ€\x9d ﬁne") == '"mojibake" fine'
  # The first 512 ids are fixed by the byte table alone: 'a</w>' is 320 and '!</w>' is 256 in
  # every CLIP vocabulary. The space byte is the 33rd of the 68 bytes moved above 255: 'Ġ', id 220.
  assert tokenizer.vocab[0] == "!" and tokenizer.vocab[256] == "!</w>"
  assert tokenizer.encode("a") == [320] and tokenizer.encode("!") == [256]
  assert tokenizer.vocab[220] == "Ġ" == chr(256 + 32)


def test_decode_and_special_tokens(clip_setup):
  tokenizer = clip_setup[0]
  row = tokenizer("A Photo of a CAT!")[0]
  assert tokenizer.decode(row) == "a photo of a cat !"
  assert tokenizer.decode(tokenizer("naïve 東京 🐱")[0]) == "naïve 東京 🐱"
  assert tokenizer.encode("<|startoftext|>x<|endoftext|>")[::2] == [tokenizer.sot_token_id,
                                                                    tokenizer.eot_token_id]
  assert int(np.argmax(row)) == list(row).index(tokenizer.eot_token_id)
  assert tokenizer("one", context_length=2).tolist() == [[tokenizer.sot_token_id,
                                                          tokenizer.eot_token_id]]


def test_num_merges(clip_setup):
  tokenizer = clip_setup[0]
  small = ClipTokenizer(tokenizer.path, num_merges=100)
  assert small.vocab_size == 512 + 100 + 2 and small.eot_token_id == 613
  assert small.vocab[:612] == tokenizer.vocab[:612]
  assert max(small.encode(" ".join(_WORDS))) < 612
  with pytest.raises(ValueError, match="num_merges=99999"):
    ClipTokenizer(tokenizer.path, num_merges=99999)


def test_real_vocabulary():
  """With the standard file (from MMJAX_BPE_VOCAB or an installed open_clip / clip) the ids are
  OpenAI's: 'a person riding a motorcycle' -> 320, 2533, 6765, 320, 10297."""
  try:
    path = find_bpe_vocab()
  except FileNotFoundError:
    pytest.skip("the standard bpe_simple_vocab_16e6.txt.gz is not installed")
  tokenizer = ClipTokenizer(path)
  assert tokenizer.vocab_size == 49408
  row = tokenizer("a person riding a motorcycle")[0]
  assert row[:8].tolist() == [49406, 320, 2533, 6765, 320, 10297, 49407, 0]


# ----------------------------------------------------------------------------- finding the file


def test_missing_vocabulary_names_where_it_looked(monkeypatch):
  monkeypatch.delenv(tok_lib.BPE_ENV_VAR, raising=False)
  monkeypatch.setattr(tok_lib, "BPE_PACKAGES", ("mmjax_no_such_package",))
  with pytest.raises(FileNotFoundError) as e:
    ClipTokenizer()
  message = str(e.value)
  for part in (tok_lib.BPE_FILENAME, tok_lib.BPE_ENV_VAR, "mmjax_no_such_package",
               "ClipTokenizer(path)"):
    assert part in message


def test_missing_explicit_path_and_env(monkeypatch, tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.txt.gz.*path argument"):
    find_bpe_vocab(tmp_path / "nowhere.txt.gz")
  monkeypatch.setenv(tok_lib.BPE_ENV_VAR, str(tmp_path / "missing.gz"))
  with pytest.raises(FileNotFoundError, match="missing.gz.*MMJAX_BPE_VOCAB"):
    find_bpe_vocab()


def test_found_by_env_folder_and_package_without_import(monkeypatch, tmp_path):
  gz = tmp_path / "pkgroot" / "fakeclippkg" / tok_lib.BPE_FILENAME
  gz.parent.mkdir(parents=True)
  (gz.parent / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
  with gzip.open(gz, "wt", encoding="utf-8") as f:
    f.write("#version: 0.2\ni n\nt h\nth e</w>\n")
  monkeypatch.setenv(tok_lib.BPE_ENV_VAR, str(gz.parent))  # a folder holding the file
  assert find_bpe_vocab() == gz
  monkeypatch.delenv(tok_lib.BPE_ENV_VAR)
  monkeypatch.syspath_prepend(str(gz.parent.parent))
  monkeypatch.setattr(tok_lib, "BPE_PACKAGES", ("mmjax_no_such_package", "fakeclippkg"))
  assert find_bpe_vocab() == gz
  assert "fakeclippkg" not in sys.modules
  pytest.importorskip("regex")
  pytest.importorskip("ftfy")
  tokenizer = ClipTokenizer()
  assert tokenizer.vocab_size == 512 + 3 + 2
  assert tokenizer.encode("the thin") == [tokenizer.encoder["the</w>"], tokenizer.encoder["th"],
                                          tokenizer.encoder["i"], tokenizer.encoder["n</w>"]]


def test_bad_merges_line(tmp_path):
  pytest.importorskip("regex")
  pytest.importorskip("ftfy")
  gz = tmp_path / "bad.txt.gz"
  with gzip.open(gz, "wt", encoding="utf-8") as f:
    f.write("#version: 0.2\ni n\nthree parts here\n")
  with pytest.raises(ValueError, match="line 3"):
    ClipTokenizer(gz)


# ----------------------------------------------------------------------------- byte tokenizer


def test_byte_ids_and_layout():
  tokenizer = ByteTokenizer(context_length=8)
  assert tokenizer.vocab_size == 259 and tokenizer.eot_token_id == tokenizer.vocab_size - 1
  got = tokenizer(["hi", "", "é"])
  np.testing.assert_array_equal(got, [[257, ord("h") + 1, ord("i") + 1, 258, 0, 0, 0, 0],
                                      [257, 258, 0, 0, 0, 0, 0, 0],
                                      [257, 0xC3 + 1, 0xA9 + 1, 258, 0, 0, 0, 0]])
  assert got.dtype == np.int32
  assert tokenizer("one string").shape == (1, 8)
  assert tokenizer([]).shape == (0, 8)


def test_byte_round_trip_and_range():
  tokenizer = ByteTokenizer()
  texts = ["a photo of a cat", "Café naïve 東京 🐱👍🏽", "tabs\tand\nnewlines", "\x00\xff", "x" * 75]
  tokens = tokenizer(texts)
  for text, row in zip(texts, tokens):
    assert tokenizer.decode(row) == text
    body = row[1:list(row).index(258)]
    np.testing.assert_array_equal(body, np.frombuffer(text.encode(), np.uint8).astype(np.int32) + 1)
    assert body.min() >= 1 and body.max() <= 256
    assert int(np.argmax(row)) == len(text.encode()) + 1


def test_byte_truncation_keeps_eot():
  tokenizer = ByteTokenizer(context_length=6)
  row = tokenizer("abcdefgh")[0]
  assert row.tolist() == [257, 98, 99, 100, 101, 258]
  assert tokenizer.decode(row) == "abcd"
  row = tokenizer("ééé", context_length=5)[0]  # 6 bytes cut to 3: the last character is split
  assert (row == 258).sum() == 1 and row[-1] == 258
  assert tokenizer.decode(row) == "é\ufffd"
  assert tokenizer("abc", context_length=40).shape == (1, 40)


def test_context_length_and_type_errors():
  with pytest.raises(ValueError, match="context_length=1"):
    ByteTokenizer(context_length=1)
  with pytest.raises(ValueError, match="context_length=0"):
    ByteTokenizer()("x", context_length=0)
  with pytest.raises(TypeError, match=r"texts\[1\]"):
    ByteTokenizer()(["ok", b"bytes"])


def test_clip_context_length_error(clip_setup):
  tokenizer = clip_setup[0]
  with pytest.raises(ValueError, match="context_length=1"):
    ClipTokenizer(tokenizer.path, context_length=1)
  with pytest.raises(ValueError, match="context_length=1"):
    tokenizer("x", context_length=1)


def test_word_ids_layout_unknown_words_and_truncation():
  tok = tok_lib.WordTokenizer(["a", "red", "circle", ".", "-"], context_length=6)
  assert (tok.sot_token_id, tok.eot_token_id, tok.vocab_size) == (7, 8, 9)
  np.testing.assert_array_equal(tok("A red, circle."), [[7, 2, 3, 1, 4, 8]])   # ',' is unknown
  np.testing.assert_array_equal(tok(["red", ""]), [[7, 3, 8, 0, 0, 0], [7, 8, 0, 0, 0, 0]])
  cut = tok("a red red red red circle")
  assert cut.shape == (1, 6) and cut[0, -1] == tok.eot_token_id and (cut == 8).sum() == 1
  assert tok.decode(tok("a red-circle, a cat", context_length=10)[0]) == "a red - circle <unk> a <unk>"
  assert tok_lib.WordTokenizer.split("Mid-sized, RED.") == ["mid", "-", "sized", ",", "red", "."]


@pytest.mark.parametrize("vocab, match", [([], "non-empty"), (["red", "red"], "repeated"),
                                          (["red circle"], "single"), (["Red"], "single")])
def test_word_vocabulary_errors(vocab, match):
  with pytest.raises(ValueError, match=match):
    tok_lib.WordTokenizer(vocab)


def test_shapes_vocabulary_covers_every_caption_and_prompt():
  from mmjax.data import shapes  # pylint: disable=import-outside-toplevel
  tok = tok_lib.WordTokenizer(shapes.VOCABULARY, context_length=40)
  config = shapes.ShapesConfig(name="t", num_train=10, num_test=10, num_test_unseen=10)
  texts = [shapes.render_example(config, split, i)["caption"]
           for split in ("train", "test", "test_unseen") for i in range(150)]
  texts += [t.format(n) for n in shapes.CLASS_NAMES for t in shapes.TEMPLATES]
  ids = tok(texts)
  assert not (ids == tok.unk_token_id).any()
  assert (ids == tok.eot_token_id).sum() == len(texts)    # nothing was cut at 40 tokens
