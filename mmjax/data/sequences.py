"""UnalignedSequences: three streams at different rates ("audio", "video", "words") telling one
story of a few events, each example with its own offsets and time warps between the streams, for
the unaligned multimodal models (MulT, Tsai et al. 2019, "Multimodal Transformer for Unaligned
Multimodal Language Sequences"; MTAG, Yang et al. 2021) and their aligned / fused baselines.

    builder = UnalignedSequences(data_dir=d)    # tfds name "mmjax_sequences", config "unaligned"
    builder = UnalignedSequences(data_dir=d, config="aligned", num_train=500)   # own config
    builder.download_and_prepare()
    source = builder.as_data_source(split="train")    # source[i]['audio']: (64, 16) float32

Generating process (example i of a split is a pure function of (seed, split, i): the same seed
gives byte-identical files):
  events  K uniform in EVENT_COUNTS = {3, 5, 7}; event k has a content c_k drawn without
          replacement from NUM_CONTENTS = 12, a tone s_k and a polarity p_k, each uniform in
          {-1, +1}; label = 1 if sum_k s_k p_k > 0 else 0 (K odd: no ties).
  words   one token per event, 1 + 2 c_k + (p_k > 0) (1..24), after 0..2 leading and before 0..2
          trailing FILLER tokens (25); 0 pads to 12. VOCAB_SIZE = 26.
  audio   0..8 leading noise frames, 2..6 frames per event (time warp), 0..8 trailing noise
          frames; an event's frame is [one_hot(c_k) * CONTENT_AMPLITUDE, s_k * TONE_AMPLITUDE, 0, 0,
          0] + N(0, noise^2) per feature, a noise frame N(0, noise^2); zeros pad to 64.
  video   0..4 leading, 1..3 frames per event, 0..4 trailing; an event's frame is
          [one_hot(c_k) * CONTENT_AMPLITUDE, 0, s_k * TONE_AMPLITUDE, 0, 0] + noise; pads to 32.
  *_event the event index of every step (-1 on offsets, fillers and padding): the ground-truth
          alignment; *_length the real steps (padding after).
CONTENT_AMPLITUDE = 1.5, TONE_AMPLITUDE = 1 and noise = 0.5: a single frame's content argmax is
wrong about 12% of the time and its tone's sign 2.3%; an audio event spans 2..6 frames, so the
evidence is there but must be pooled (a video event may have one frame: a noisier tone).

What each stream tells: audio and video carry content and tone (redundant: either one is enough,
so one may be missing), words carry content and polarity. Tones and polarities are uniform and
symmetric, so every stream alone (and audio with video) is independent of the label, and so is
every additive model g(audio, video) + h(words) trained by cross-entropy (flipping all tones flips
the label; by convexity the best such logit is 0): late fusion is at chance. The label needs the
tone and the polarity of the same event, matched by content: elements that co-occur in time.

Config "aligned": the same events and draws, resampled to one clock, step k = event k in every
stream: audio / video step k = the mean of that event's frames (noise std noise / sqrt(frames)),
words step k = the event token (no fillers); all padded to 12, *_event = k on real steps.

Also here (pure jax.numpy, jittable): content_features, the evidence of each step for each
content (the alignment features of early fusion), shapes / example_batch (model input shapes),
and the grain transform to the model inputs of mmjax's sequence models (with stream dropout).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import datasets

SPLITS = {"train": 0, "validation": 1, "test": 2}
CLASS_NAMES = ("negative", "positive")
STREAMS = ("audio", "video", "words")
NUM_CONTENTS = 12
EVENT_COUNTS = (3, 5, 7)
FILLER = 2 * NUM_CONTENTS + 1          # 25; event tokens are 1..24, 0 pads
VOCAB_SIZE = FILLER + 1
NUM_FEATURES = 16                      # audio and video frames
TONE_DIM = {"audio": NUM_CONTENTS, "video": NUM_CONTENTS + 1}   # where each shows the tone
CONTENT_AMPLITUDE = 1.5
TONE_AMPLITUDE = 1.0
NOISE = 0.5
# stream -> (max leading offset, (min, max) steps per event, max trailing offset, padded length)
TIMING = {"audio": (8, (2, 6), 8, 64), "video": (4, (1, 3), 4, 32), "words": (2, (1, 1), 2, 12)}
ALIGNED_LENGTH = 12
_CONFIG_FIELDS = ("aligned", "num_train", "num_validation", "num_test", "noise", "seed")


@dataclasses.dataclass(eq=False)
class SequencesConfig(tfds.core.BuilderConfig):
  """aligned: streams on the event clock (see the module docstring); num_*: examples per split;
  noise: std of the gaussian feature noise of audio and video; seed: the whole dataset's seed."""
  aligned: bool = False
  num_train: int = 8000
  num_validation: int = 1000
  num_test: int = 1000
  noise: float = NOISE
  seed: int = 0

  def validate(self):
    """Raises ValueError naming the first field out of range."""
    if not isinstance(self.aligned, (bool, np.bool_)):
      raise ValueError(f"SequencesConfig.aligned={self.aligned!r}: expected True or False")
    for f in ("num_train", "num_validation", "num_test"):
      if getattr(self, f) < 1:
        raise ValueError(f"SequencesConfig.{f}={getattr(self, f)}: expected >= 1")
    if not np.isfinite(self.noise) or self.noise < 0:
      raise ValueError(f"SequencesConfig.noise={self.noise}: expected a finite number >= 0")
    if self.seed < 0:
      raise ValueError(f"SequencesConfig.seed={self.seed}: expected an int >= 0")


# ------------------------------------------------------------------------------------- generate

def draw_events(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(contents (K,), tones (K,), polarities (K,)) of one example; K in EVENT_COUNTS, distinct
  contents, tones and polarities in {-1, +1}."""
  k = EVENT_COUNTS[rng.integers(len(EVENT_COUNTS))]
  contents = rng.permutation(NUM_CONTENTS)[:k]
  signs = np.where(rng.random((2, k)) < 0.5, -1, 1)
  return contents, signs[0], signs[1]


def label_of(tones: np.ndarray, polarities: np.ndarray) -> int:
  """1 if sum_k s_k p_k > 0 else 0."""
  return int(np.sum(tones * polarities) > 0)


def word_tokens(contents: np.ndarray, polarities: np.ndarray) -> np.ndarray:
  """The event tokens 1 + 2 c_k + (p_k > 0), in 1..24."""
  return 1 + 2 * contents + (polarities > 0)


def clean_frames(name: str, contents: np.ndarray, tones: np.ndarray) -> np.ndarray:
  """(K,) events -> (K, 16) noiseless audio or video frames: content one-hot, tone at TONE_DIM."""
  frames = np.zeros((len(contents), NUM_FEATURES))
  frames[np.arange(len(contents)), contents] = CONTENT_AMPLITUDE
  frames[:, TONE_DIM[name]] = tones * TONE_AMPLITUDE
  return frames


def event_steps(rng: np.random.Generator, name: str, k: int) -> np.ndarray:
  """The event index of each real step of stream `name` (-1 on the random offsets): (L,)."""
  lead_max, (lo, hi), trail_max, _ = TIMING[name]
  lead, trail = rng.integers(0, lead_max + 1), rng.integers(0, trail_max + 1)
  durations = rng.integers(lo, hi + 1, size=k)
  return np.concatenate([np.full(lead, -1), np.repeat(np.arange(k), durations),
                         np.full(trail, -1)]).astype(np.int32)


def _pad(x: np.ndarray, length: int, value=0) -> np.ndarray:
  """x (L, ...) -> (length, ...) with `value` after the first L steps."""
  out = np.full((length,) + x.shape[1:], value, x.dtype)
  out[:len(x)] = x
  return out


def _event_means(frames: np.ndarray, event: np.ndarray, k: int) -> np.ndarray:
  """(L, F) frames and their event indices -> (k, F): the mean frame of each event."""
  member = (event[None, :] == np.arange(k)[:, None]).astype(np.float64)       # (k, L)
  return member @ frames / member.sum(1, keepdims=True)                      # (k, F)


def make_example(config: SequencesConfig, split: str, index: int) -> dict:
  """Example `index` of `split`: a pure function of (config.seed, split, index); config.aligned
  resamples the same draws to the event clock (module docstring)."""
  rng = np.random.default_rng([config.seed, SPLITS[split], index])
  contents, tones, polarities = draw_events(rng)
  k = len(contents)
  out = {"id": f"{split}/{index:06d}", "label": label_of(tones, polarities), "num_events": k}
  word_event = event_steps(rng, "words", k)
  tokens = np.where(word_event >= 0, word_tokens(contents, polarities)[word_event], FILLER)
  streams = {"words": (tokens.astype(np.int32), word_event)}
  for name in ("audio", "video"):
    event = event_steps(rng, name, k)
    clean = np.where(event[:, None] >= 0, clean_frames(name, contents, tones)[event], 0.0)
    streams[name] = (clean + config.noise * rng.standard_normal(clean.shape), event)
  for name in STREAMS:
    x, event = streams[name]
    if config.aligned:
      x = x[event >= 0] if name == "words" else _event_means(x, event, k)
      event = np.arange(k, dtype=np.int32)
    length = ALIGNED_LENGTH if config.aligned else TIMING[name][3]
    dtype = np.int32 if name == "words" else np.float32
    out[name] = _pad(x.astype(dtype), length)
    out[f"{name}_length"] = len(x)
    out[f"{name}_event"] = _pad(event, length, -1)
  return out


class UnalignedSequences(tfds.core.GeneratorBasedBuilder):
  """Audio / video / words sequences of a few events (see the module docstring); registered as
  "mmjax_sequences"."""
  name = "mmjax_sequences"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      SequencesConfig(name="unaligned", description="Streams at their own rates (default)."),
      SequencesConfig(name="aligned", aligned=True, description="Step k = event k everywhere."),
  ]

  def __init__(self, *, config: str | SequencesConfig | None = None,
               file_format=tfds.core.FileFormat.ARRAY_RECORD, **kwargs):
    """kwargs: data_dir, version, or SequencesConfig fields (aligned, num_train, num_validation,
    num_test, noise, seed), which override `config` (default "unaligned") under a config name
    that encodes them, so different settings never share a directory."""
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
    if overrides:
      base = config if isinstance(config, SequencesConfig) else next(
          (c for c in self.BUILDER_CONFIGS if c.name == (config or "unaligned")), None)
      if base is None:
        raise ValueError(f"UnalignedSequences config={config!r}: expected 'unaligned', "
                         "'aligned' or a SequencesConfig")
      values = {**{f: getattr(base, f) for f in _CONFIG_FIELDS}, **overrides}
      config = next((c for c in self.BUILDER_CONFIGS
                     if all(getattr(c, f) == v for f, v in values.items())), None)
      noise = f"{float(values['noise']):g}".replace(".", "p").replace("-", "m")
      config = config or SequencesConfig(
          name=("aligned" if values["aligned"] else "unaligned") +
          "_train{num_train}_val{num_validation}_test{num_test}_".format(**values) +
          f"noise{noise}_seed{values['seed']}", **values)
    super().__init__(config=config, file_format=file_format, **kwargs)
    self.builder_config.validate()

  def _info(self) -> tfds.core.DatasetInfo:
    aligned = self.builder_config.aligned
    features = {"id": tfds.features.Text(), "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                "num_events": tfds.features.Scalar(np.int32)}
    for name, shape in shapes(aligned).items():
      if name in STREAMS:
        dtype = np.int32 if name == "words" else np.float32
        features[name] = tfds.features.Tensor(shape=shape, dtype=dtype)
        features[f"{name}_length"] = tfds.features.Scalar(np.int32)
        features[f"{name}_event"] = tfds.features.Tensor(shape=shape[:1], dtype=np.int32)
    return self.dataset_info_from_configs(
        description=__doc__, features=tfds.features.FeaturesDict(features),
        supervised_keys=None, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is generated
    c = self.builder_config
    sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _generate_examples(self, split, n):
    for i in range(n):
      yield i, make_example(self.builder_config, split, i)


# ----------------------------------------------------------------------------------- model side

def shapes(aligned: bool = False) -> dict[str, tuple[int, ...]]:
  """Model input name -> shape without the batch axis: 'audio' (Ta, 16), 'video' (Tv, 16),
  'words' (Tw,), and () for every '{name}_length' and '{name}_present'. Ta, Tv, Tw = 64, 32, 12
  (aligned: 12 each)."""
  out = {}
  for name in STREAMS:
    length = ALIGNED_LENGTH if aligned else TIMING[name][3]
    out[name] = (length,) if name == "words" else (length, NUM_FEATURES)
    out[f"{name}_length"], out[f"{name}_present"] = (), ()
  return out


def example_batch(batch_size: int, aligned: bool = False) -> dict[str, np.ndarray]:
  """A batch of the model inputs' shapes and dtypes (zeros, full lengths, every stream present),
  e.g. for model.init."""
  out, shape_of = {}, shapes(aligned)
  for name, shape in shape_of.items():
    if name.endswith("_length"):
      out[name] = np.full((batch_size,), shape_of[name[:-len("_length")]][0], np.int32)
    elif name.endswith("_present"):
      out[name] = np.ones((batch_size,), bool)
    else:
      out[name] = np.zeros((batch_size,) + shape, np.int32 if name == "words" else np.float32)
  return out


def content_features(inputs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The evidence of each step for each content: the dataset's alignment features.

  audio, video: their first NUM_CONTENTS features / CONTENT_AMPLITUDE (an event frame's expectation
  is then one_hot(content), as for words); words: one_hot((token - 1) // 2) for event tokens
  1..24, zeros for FILLER and padding. Steps past '{name}_length' (when given) are zeros. Pure
  jax.numpy, jittable; streams missing from `inputs` are left out.

  Args:
    inputs: the model input dict ('audio' (B, Ta, 16), 'words' (B, Tw) int, ...).

  Returns:
    {name: (B, T, NUM_CONTENTS) float32}, e.g. the DTW cost between words and audio
    similarity.squared_distances(f['words'], f['audio'])   # (B, Tw, 12), (B, Ta, 12) -> (B, Tw, Ta)
  """
  out = {}
  for name in STREAMS:
    if name not in inputs:
      continue
    x = jnp.asarray(inputs[name])
    if name == "words":
      token = x.astype(jnp.int32)
      is_event = (token >= 1) & (token <= 2 * NUM_CONTENTS)
      f = jax.nn.one_hot((token - 1) // 2, NUM_CONTENTS) * is_event[..., None]  # (B, T, 12)
    else:
      f = x[..., :NUM_CONTENTS].astype(jnp.float32) / CONTENT_AMPLITUDE          # (B, T, 12)
    if f"{name}_length" in inputs:
      real = jnp.arange(f.shape[-2]) < jnp.asarray(inputs[f"{name}_length"])[..., None]
      f = f * real[..., None]
    out[name] = f.astype(jnp.float32)
  return out


@dataclasses.dataclass
class SequenceTransform(grain.RandomMapTransform):
  """One example -> the model inputs: 'audio' (Ta, 16) float32, 'video' (Tv, 16) float32, 'words'
  (Tw,) int32, '{name}_length' int32, '{name}_present' bool and 'label' int32.

  stream_dropout p: each stream is marked absent ('{name}_present' False) with probability p,
  independently, except that when all would be, one of them (uniform) stays present: never all
  absent, and each stream is absent with probability p (1 - p^2 / 3). Only the flag
  changes: the arrays are as stored (mmjax.evaluate.interactions marks streams absent to evaluate).
  The rng is grain's, keyed by record position: deterministic and resumable.
  """
  stream_dropout: float = 0.0

  def __post_init__(self):
    if not 0.0 <= self.stream_dropout < 1.0:
      raise ValueError(f"stream_dropout={self.stream_dropout}: expected a probability in [0, 1)")

  def present(self, rng: np.random.Generator) -> np.ndarray:
    """(3,) bool over STREAMS: which streams this example keeps (at least one)."""
    keep = np.ones(len(STREAMS), bool)
    if self.stream_dropout > 0:
      keep = rng.random(len(STREAMS)) >= self.stream_dropout
      if not keep.any():            # nothing would be left: one stream (uniform) stays
        keep[rng.integers(len(STREAMS))] = True
    return keep

  def random_map(self, element, rng: np.random.Generator):
    """A stored example (dict of numpy) -> the model input dict and the label."""
    out = {"label": np.asarray(element["label"], np.int32)}
    for name, present in zip(STREAMS, self.present(rng)):
      out[name] = np.asarray(element[name], np.int32 if name == "words" else np.float32)
      out[f"{name}_length"] = np.asarray(element[f"{name}_length"], np.int32)
      out[f"{name}_present"] = np.asarray(present, bool)
    return out


def transform(*, train: bool, tokenizer=None, stream_dropout: float = 0.0,
              **unused) -> SequenceTransform:
  """The model inputs of an example; stream_dropout applies when training only (tokens are
  stored: no tokenizer; other settings such as image_size are ignored)."""
  del tokenizer, unused
  return SequenceTransform(stream_dropout if train else 0.0)


DATASET = datasets.Dataset(
    "sequences", builder=lambda: UnalignedSequences, transform=transform, class_names=CLASS_NAMES,
    templates=(), fields=("label",), has_captions=False)
"""The unaligned audio / video / words sequences (mmjax.data.datasets)."""
