"""The unaligned sequences dataset (mmjax.data.sequences): the TFDS builder's files, the generating
process's claims (each stream alone uninformative, the alignment recoverable by DTW), the
alignment features and the transform with stream dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.align.dtw import dtw
from mmjax.similarity import squared_distances
from mmjax.data import datasets, pipeline
from mmjax.data import sequences as S

SIZES = dict(num_train=200, num_validation=20, num_test=20)


def _prepare(data_dir, **kwargs):
  builder = S.UnalignedSequences(data_dir=str(data_dir), **SIZES, **kwargs)
  builder.download_and_prepare()
  return builder


def _read(builder, split="train"):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def unaligned(tmp_path_factory):
  return _prepare(tmp_path_factory.mktemp("seq"))


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
  return _prepare(tmp_path_factory.mktemp("seq_aligned"), config="aligned")


@pytest.fixture(scope="module")
def generated():
  """3000 unaligned and aligned examples straight from the pure function (no TFDS)."""
  configs = S.SequencesConfig(name="u"), S.SequencesConfig(name="a", aligned=True)
  return [[S.make_example(c, "train", i) for i in range(3000)] for c in configs]


def _stack(examples, key):
  return np.stack([np.asarray(e[key]) for e in examples])


# ---------------------------------------------------------------------------------------- builder

def test_builder_files_match_the_pure_function(unaligned, aligned):
  assert unaligned.name == "mmjax_sequences" and unaligned.info.file_format.value == "array_record"
  assert unaligned.builder_config.name == "unaligned_train200_val20_test20_noise0p5_seed0"
  assert aligned.builder_config.aligned and aligned.builder_config.name.startswith("aligned_")
  assert {k: v.num_examples for k, v in unaligned.info.splits.items()} == {
      "train": 200, "validation": 20, "test": 20}
  assert unaligned.info.features["label"].names == ["negative", "positive"]
  for builder in (unaligned, aligned):
    for split in ("train", "test"):
      examples = _read(builder, split)
      for i in (0, 7, len(examples) - 1):
        want = S.make_example(builder.builder_config, split, i)
        got = examples[i]
        assert set(got) == set(want)
        for key, value in want.items():
          if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype and got[key].tobytes() == value.tobytes(), key
          else:
            assert (got[key].decode() if key == "id" else got[key]) == value, key
  ex = _read(unaligned)[0]
  assert ex["audio"].shape == (64, 16) and ex["video"].shape == (32, 16) and ex["words"].shape == (
      12,)
  assert _read(aligned)[0]["audio"].shape == (12, 16)


def test_examples_are_a_pure_function_of_seed_split_index():
  config = S.SequencesConfig(name="t")
  a, b = S.make_example(config, "validation", 3), S.make_example(config, "validation", 3)
  assert all(np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes() for k in a)
  other = S.make_example(S.SequencesConfig(name="t", seed=1), "validation", 3)
  assert other["audio"].tobytes() != a["audio"].tobytes()
  assert S.make_example(config, "test", 3)["audio"].tobytes() != a["audio"].tobytes()


def test_config_errors_name_the_field(tmp_path):
  with pytest.raises(ValueError, match="noise=-1"):
    S.UnalignedSequences(data_dir=str(tmp_path), noise=-1.0)
  with pytest.raises(ValueError, match="num_test=0"):
    S.UnalignedSequences(data_dir=str(tmp_path), num_test=0)
  assert datasets.get("sequences") is S.DATASET


# ------------------------------------------------------------------------------ generating process

def test_lengths_padding_and_events_are_consistent(generated):
  residuals = []
  for ex in generated[0][:300]:
    k = ex["num_events"]
    assert k in S.EVENT_COUNTS
    for name in S.STREAMS:
      lead_max, (lo, hi), trail_max, size = S.TIMING[name]
      n, event, x = ex[f"{name}_length"], ex[f"{name}_event"], ex[name]
      assert np.all(event[n:] == -1) and not np.any(x[n:])          # padding
      real = event[:n]
      lead = int(np.argmax(real >= 0))
      trail = n - 1 - int(np.flatnonzero(real >= 0)[-1])
      assert lead <= lead_max and trail <= trail_max
      inner = real[lead:n - trail]
      assert np.all(np.diff(inner) >= 0) and np.all(np.diff(inner) <= 1) and inner[-1] == k - 1
      durations = np.bincount(inner, minlength=k)
      assert inner[0] == 0 and durations.min() >= lo and durations.max() <= hi
    w, we = ex["words"][:ex["words_length"]], ex["words_event"][:ex["words_length"]]
    assert np.all((w == S.FILLER) == (we < 0)) and np.all((w >= 1) & (w <= S.FILLER))
    contents = (w[we >= 0] - 1) // 2
    assert len(set(contents.tolist())) == k                       # without replacement
    for name in ("audio", "video"):        # frame = clean frame of its event (0: offset) + noise
      x, event = ex[name][:ex[f"{name}_length"]], ex[f"{name}_event"][:ex[f"{name}_length"]]
      clean = np.zeros_like(x)
      clean[event >= 0, (w[we >= 0] - 1)[event[event >= 0]] // 2] = S.CONTENT_AMPLITUDE
      residuals.append((x - clean)[:, :12].ravel())
  residual = np.concatenate(residuals)     # content dims: N(0, 0.5^2) once the one-hot is off
  assert abs(residual.mean()) < 0.01 and abs(residual.std() - 0.5) < 0.01


def test_labels_are_balanced_and_given_by_the_oracle_rule(generated):
  unaligned, aligned = generated
  labels = _stack(unaligned, "label")
  assert 0.47 < labels.mean() < 0.53            # 3000 draws of a fair coin: std 0.009
  for u, a in zip(unaligned[:200], aligned[:200]):     # the same events on the event clock
    k = u["num_events"]
    assert a["label"] == u["label"] and a["num_events"] == k
    assert np.array_equal(a["words"][:k], u["words"][u["words_event"] >= 0])
    for name in ("audio", "video"):
      member = u[f"{name}_event"][:, None] == np.arange(k)                   # (T, k)
      means = (member.T.astype(np.float64) @ u[name]) / member.sum(0)[:, None]
      np.testing.assert_allclose(a[name][:k], means, atol=1e-5)
      assert not np.any(a[name][k:]) and a[f"{name}_length"] == k
  # oracle: tone (audio + video) times polarity (token parity) of the same event
  for noise, examples in ((0.5, aligned), (0.0, None)):
    config = S.SequencesConfig(name="n", aligned=True, noise=noise)
    examples = examples or [S.make_example(config, "train", i) for i in range(500)]
    votes = [np.sign(e["audio"][:, 12] + e["video"][:, 13]) * np.where(e["words"] % 2 == 0, 1, -1)
             * (e["words"] > 0) for e in examples]
    rule = (np.sum(votes, axis=1) > 0).astype(int)
    assert np.mean(rule == _stack(examples, "label")) >= (0.995 if noise else 1.0)


def _pooled(examples):
  """Per example, per content: audio tone, video tone (means over frames whose argmax content it
  is) and word polarity (+-1, 0 if absent): (N, 12) each."""
  out = {n: np.zeros((len(examples), S.NUM_CONTENTS)) for n in S.STREAMS}
  for i, e in enumerate(examples):
    for name in ("audio", "video"):
      x = e[name][:e[f"{name}_length"]]
      c = np.argmax(x[:, :12], 1)
      tone = x[:, S.TONE_DIM[name]]
      out[name][i] = np.bincount(c, tone, 12) / np.maximum(np.bincount(c, minlength=12), 1)
    w = e["words"][(e["words"] >= 1) & (e["words"] < S.FILLER)]
    out["words"][i, (w - 1) // 2] = np.where(w % 2 == 0, 1.0, -1.0)
  return out


def test_each_stream_alone_is_at_chance_and_the_interaction_decides(generated):
  from sklearn.linear_model import LogisticRegression
  examples = generated[0]
  pooled, labels = _pooled(examples), _stack(examples, "label")
  means = {n: np.stack([e[n][:e[f"{n}_length"]].mean(0) for e in examples]) for n in
           ("audio", "video")}

  def accuracy(x):   # train on 2000, test on 1000
    model = LogisticRegression(max_iter=2000).fit(x[:2000], labels[:2000])
    return model.score(x[2000:], labels[2000:])

  lengths = np.stack([[e[f"{n}_length"] for n in S.STREAMS] + [e["num_events"]]
                      for e in examples]).astype(float)
  chance = {
      "audio": np.hstack([pooled["audio"], means["audio"]]),
      "video": np.hstack([pooled["video"], means["video"]]),
      "words": np.hstack([pooled["words"], np.abs(pooled["words"])]),
      "audio+video": np.hstack([pooled["audio"], pooled["video"]]),
      "late (additive)": np.hstack([pooled["audio"], pooled["video"], pooled["words"]]),
      "lengths": lengths}
  for name, x in chance.items():
    assert accuracy(x) < 0.6, name                   # 1000 test examples at chance: std 0.016
  # the interaction of tone and polarity of the same content (what alignment buys) decides it
  # measured: 0.979 (audio), 0.923 (video: one frame per event, noisier tones)
  assert accuracy(np.sign(pooled["audio"]) * pooled["words"]) > 0.95
  assert accuracy(np.sign(pooled["video"]) * pooled["words"]) > 0.88


def _masked_cost(cost, n, m):
  """(N, R, C) cost, real sizes (N,) -> one with the padding block free and its borders
  forbidden, so DTW of the whole matrix passes through (n - 1, m - 1): the real block's DTW."""
  i = np.arange(cost.shape[1])[None, :, None] >= n[:, None, None]
  j = np.arange(cost.shape[2])[None, None, :] >= m[:, None, None]
  return np.where(i & j, 0.0, np.where(i | j, 1e6, cost))


def test_dtw_on_content_features_recovers_the_alignment(generated):
  examples = generated[0][:200]
  batch = {k: _stack(examples, k) for k in ("audio", "audio_length", "words", "words_length")}
  f = jax.jit(S.content_features)(batch)
  assert f["audio"].shape == (200, 64, 12) and f["words"].shape == (200, 12, 12)
  n, m = batch["words_length"], batch["audio_length"]
  cost = np.asarray(squared_distances(f["words"], f["audio"]))      # (B, 12, 64)
  path = np.asarray(dtw(jnp.asarray(_masked_cost(cost, n, m), jnp.float32)).path) > 0
  word_event, audio_event = _stack(examples, "words_event"), _stack(examples, "audio_event")
  steps = np.arange(64)
  linear = (steps >= np.floor(np.arange(12)[:, None] * m[:, None, None] / n[:, None, None])) & (
      steps < np.ceil((np.arange(12)[:, None] + 1) * m[:, None, None] / n[:, None, None]))

  def accuracy(path):   # word i is right when every event frame matched to it is of its event
    correct = []
    for b in range(len(examples)):
      for i in np.flatnonzero(word_event[b] >= 0):
        matched = audio_event[b][path[b, i]]        # events of the audio frames matched to word i
        matched = matched[matched >= 0]             # offset frames carry no event
        correct.append(matched.size > 0 and np.all(matched == word_event[b, i]))
    return np.mean(correct)

  # measured on the 1000 event words of these 200 examples: DTW 96.5% (99.5% have a majority of
  # their frames in their event); a uniform warp of the real steps 18.4% (offsets, time warps)
  assert accuracy(path) >= 0.93
  assert accuracy(linear) < 0.4


def test_content_features_reference():
  batch = S.example_batch(2)
  assert {k: v.shape[1:] for k, v in batch.items()} == S.shapes()
  rng = np.random.default_rng(0)
  batch["audio"] = rng.normal(size=(2, 64, 16)).astype(np.float32)
  batch["words"] = np.array([[25, 1, 2, 24, 0, 0, 0, 0, 0, 0, 0, 0], [3] * 12], np.int32)
  batch["audio_length"] = np.array([64, 10], np.int32)
  batch["words_length"] = np.array([4, 12], np.int32)
  f = S.content_features(batch)
  want = np.zeros((2, 12, 12))
  want[0, 1, 0] = want[0, 2, 0] = want[0, 3, 11] = 1.0
  want[1, :, 1] = 1.0
  np.testing.assert_array_equal(f["words"], want)
  audio = batch["audio"][..., :12] / S.CONTENT_AMPLITUDE
  audio[1, 10:] = 0.0
  np.testing.assert_allclose(f["audio"], audio, rtol=1e-6)
  assert f["audio"].dtype == jnp.float32 and S.shapes(aligned=True)["video"] == (12, 16)


# -------------------------------------------------------------------------------------- transform

def test_stream_dropout_rate_and_never_all_absent(generated):
  ex = generated[0][0]
  p = 0.4
  t = S.DATASET.transform(train=True, tokenizer=None, stream_dropout=p, image_size=64)
  present = np.stack([[t.random_map(ex, np.random.default_rng(i))[f"{n}_present"]
                       for n in S.STREAMS] for i in range(4000)])
  assert present.any(1).all()
  # each stream absent w.p. p (1 - p^2 / 3) = 0.3787 (std of the mean over 4000: 0.008)
  np.testing.assert_allclose(1 - present.mean(0), p * (1 - p * p / 3), atol=0.03)
  out = t.random_map(ex, np.random.default_rng(5))
  again = t.random_map(ex, np.random.default_rng(5))
  assert all(np.array_equal(out[k], again[k]) for k in out)
  assert np.array_equal(out["audio"], ex["audio"]) and out["words"].dtype == np.int32
  evaluate = S.DATASET.transform(train=False, stream_dropout=p)
  assert all(evaluate.random_map(ex, np.random.default_rng(i))[f"{n}_present"]
             for i in range(20) for n in S.STREAMS)
  with pytest.raises(ValueError, match="stream_dropout=1.0"):
    S.transform(train=True, stream_dropout=1.0)


def test_loader_batches_have_the_model_input_structure(unaligned):
  source = unaligned.as_data_source(split="validation")
  loader = pipeline.make_loader(source, S.transform(train=True, stream_dropout=0.5),
                                global_batch_size=8, seed=0, num_epochs=1, shuffle=False)
  batch = next(iter(loader))
  want = S.example_batch(8)
  assert set(batch) == set(want) | {"label"}
  for k, v in want.items():
    assert batch[k].shape == v.shape and batch[k].dtype == v.dtype, k
  assert batch["audio_present"].sum() < 8 and np.all(np.stack(
      [batch[f"{n}_present"] for n in S.STREAMS]).any(0))
