"""Sequence classifiers of unaligned streams (mmjax.models.sequence) and the alignment they use
(mmjax.align.resample).

The alignments are checked in float64 against hand-built warpings (one-hot contents, so the optimal
DTW path and the OT plan are known). Every model is checked, in one jitted call, for: garbage (NaN
features, random tokens) beyond the lengths leaves the logits unchanged; missing streams (present
False, also with length 0; or present and empty) give finite logits, and the missing stream's
values are ignored; a model reading a subset of the streams ignores the others. LateFusion's logits
are checked against the sum of its branches, and a few Adam steps on a tiny batch lower every
model's loss. Widths are tiny and the parameters come from numpy (compiling the initialisers costs
more than the tests).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.models import sequence as S
from mmjax.align.resample import align_to_reference

B, F, W = 3, 16, 8
STEPS = {"audio": 10, "video": 6, "words": 5}
LENGTHS = {"audio": [10, 7, 4], "video": [6, 3, 5], "words": [5, 2, 4]}
COMMON = dict(num_classes=3, width=W, depth=1, num_heads=2)


def _features(inputs):
  """Per-step evidence over 12 shared contents, as the dataset's features_fn."""
  tok = inputs["words"]
  event = (tok >= 1) & (tok <= 24)
  return {"audio": inputs["audio"][..., :12], "video": inputs["video"][..., :12],
          "words": jax.nn.one_hot((tok - 1) // 2, 12) * event[..., None]}


class _MeanGraph(nn.Module):
  """Stand-in for MTAG: a Dense per node, mean over all real nodes of all streams."""

  @nn.compact
  def __call__(self, xs, lengths):
    h = [nn.Dense(6, name=f"node_{s}")(x) for s, x in sorted(xs.items())]
    valid = [jnp.arange(x.shape[1]) < lengths[s][:, None] for s, x in sorted(xs.items())]
    h, valid = jnp.concatenate(h, 1), jnp.concatenate(valid, 1)           # (B, N, 6), (B, N)
    return jnp.sum(jnp.where(valid[..., None], h, 0), 1) / jnp.sum(valid, 1, keepdims=True)


MODELS = {
    "unimodal": functools.partial(S.Unimodal, stream="audio"),
    "late": S.LateFusion,
    "early_dtw": functools.partial(S.EarlyFusion, align="dtw", features_fn=_features,
                                   aligner=align_to_reference),
    "early_ot": functools.partial(S.EarlyFusion, align="ot", features_fn=_features, num_iters=20,
                                  aligner=align_to_reference),
    "early_none": functools.partial(S.EarlyFusion, align="none", aligner=align_to_reference),
    "pooled_tensor": functools.partial(S.PooledFusion, fusion="tensor", fusion_dim=3),
    "pooled_lowrank": functools.partial(S.PooledFusion, fusion="lowrank", fusion_dim=3, rank=2),
    "mult": S.MulT,
    "graph": functools.partial(S.GraphClassifier, graph=_MeanGraph()),
    "graph_time": functools.partial(S.GraphClassifier, graph=_MeanGraph(), positions="time"),
}


def _batch(seed, extra=0, b=B):
  """Inputs with zeros (or token 0) beyond the lengths; `extra` more padded steps per stream."""
  rng = np.random.default_rng(seed)
  out = {}
  for s, t in STEPS.items():
    n = np.resize(np.array(LENGTHS[s]), b)
    valid = np.arange(t + extra) < n[:, None]
    if s == "words":
      out[s] = np.where(valid, rng.integers(1, 26, (b, t + extra)), 0).astype(np.int32)
    else:
      out[s] = np.where(valid[..., None], rng.normal(size=(b, t + extra, F)), 0).astype(np.float32)
    out[f"{s}_length"] = n.astype(np.int32)
    out[f"{s}_present"] = np.ones(b, bool)
  out["label"] = rng.integers(0, 3, b).astype(np.int32)
  return out


def _with_garbage(batch, extra, seed=1):
  """The same rows with `extra` more steps, NaN features / random tokens beyond the lengths."""
  rng = np.random.default_rng(seed)
  out = dict(batch)
  for s in STEPS:
    x = batch[s]
    n = batch[f"{s}_length"]
    pad = [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2)
    x = np.pad(x, pad)
    valid = (np.arange(x.shape[1]) < n[:, None]).reshape(n.shape + (-1,) + (1,) * (x.ndim - 2))
    junk = rng.integers(0, 26, x.shape) if s == "words" else np.full(x.shape, np.nan)
    out[s] = np.where(valid, x, junk).astype(x.dtype)
  return out


def _cat(*batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _init_like(shapes, seed=0):
  """Variables of the structure model.init gives, from numpy: LayerNorm scales 1, biases 0,
  kernels N(0, 1 / fan_in), other vectors (mask tokens, LMF weights) N(0, 1)."""
  rng = np.random.default_rng(seed)

  def one(path, s):
    name = str(path[-2].key if hasattr(path[-1], "name") else path[-1].key)
    if name == "scale":
      return np.ones(s.shape, s.dtype)
    if "bias" in name:
      return np.zeros(s.shape, s.dtype)
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 and name != "embedding" else 1
    return (rng.normal(size=s.shape) / np.sqrt(fan_in)).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(one, shapes)


@functools.cache
def _model_and_params(name, streams=("audio", "video", "words")):
  model = MODELS[name](streams=streams, **COMMON)
  shapes = jax.eval_shape(model.init, jax.random.key(0), _batch(0))
  return model, _init_like(shapes)


def _loss(model, params, batch):
  logits = model.apply(params, batch)
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


# ----------------------------------------------------------------------------------- alignment

def _onehot(contents, t, c=4):
  """(t, c) one-hot rows of `contents`, NaN beyond them."""
  x = np.full((t, c), np.nan)
  x[:len(contents)] = np.eye(c)[contents]
  return x


def _reference_average(values, groups, t):
  """float64 numpy: row i = mean of values[j] for j in groups[i]; 0 for rows without groups."""
  out = np.zeros((t, values.shape[-1]))
  for i, js in enumerate(groups):
    if js:
      out[i] = values[js].mean(0)
  return out


def _align(method, ref, other, values, **kw):
  return np.asarray(jax.jit(functools.partial(align_to_reference, method=method, **kw))(
      jnp.asarray(np.stack([_onehot(r, 5) for r in ref])), jnp.array([len(r) for r in ref]),
      jnp.asarray(np.stack([_onehot(o, 9) for o in other])), jnp.array([len(o) for o in other]),
      jnp.asarray(values)))


def test_dtw_alignment_follows_the_warp(x64):
  """Row 0: other = warp of ref with repeats; row 1: the ref repeats a step (two ref steps on one
  other step), ref without padding; row 2: the other stream is empty. NaN in every padding."""
  ref = [[0, 1, 2, 3], [2, 0, 3, 1, 1], [1, 2, 0]]
  other = [[0, 0, 1, 1, 1, 2, 3, 3], [2, 0, 0, 3, 1], []]
  values = np.random.default_rng(0).normal(size=(3, 9, 2))
  for o, v in zip(other, values):
    v[len(o):] = np.nan
  groups = [[[0, 1], [2, 3, 4], [5], [6, 7]], [[0], [1, 2], [3], [4], [4]], [[], [], []]]
  got = _align("dtw", ref, other, values)
  want = np.stack([_reference_average(v, g, 5) for v, g in zip(values, groups)])
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_ot_alignment_is_the_barycentric_projection(x64):
  """Marginals that match content by content (each ref step owns an equal share of the other's
  steps): the entropic plan is block diagonal up to exp(-1 / eps)."""
  ref = [[0, 1, 2], [1, 0], [3, 2, 1, 0]]
  other = [[0, 0, 1, 1, 2, 2], [1, 1, 1, 0, 0, 0], [3, 2, 1, 0]]
  values = np.random.default_rng(1).normal(size=(3, 9, 2))
  groups = [[[0, 1], [2, 3], [4, 5]], [[0, 1, 2], [3, 4, 5]], [[0], [1], [2], [3]]]
  got = _align("ot", ref, other, values, epsilon=0.02, num_iters=200)
  want = np.stack([_reference_average(v, g, 5) for v, g in zip(values, groups)])
  np.testing.assert_allclose(got, want, atol=1e-8)


def test_none_alignment_stretches_time(x64):
  ref = [[0, 1, 2, 3], [0, 0, 0, 0, 0], [1, 2, 0]]
  other = [[0] * 7, [1, 1], []]
  values = np.random.default_rng(2).normal(size=(3, 9, 2))
  groups = [[[i * 7 // 4] for i in range(4)], [[i * 2 // 5] for i in range(5)], [[]] * 3]
  want = np.stack([_reference_average(v, g, 5) for v, g in zip(values, groups)])
  np.testing.assert_allclose(_align("none", ref, other, values), want, rtol=1e-12, atol=1e-12)
  # a row whose reference or other stream is missing is time-stretched, whatever the method
  got = _align("dtw", ref, other, values, reference_present=jnp.array([False, True, True]),
               other_present=jnp.array([True, False, False]))
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_masked_mean_and_bad_arguments():
  x = np.random.default_rng(3).normal(size=(3, 4, 2)).astype(np.float32)
  x[1, 2:] = np.nan
  got = np.asarray(S.masked_mean(jnp.asarray(x), jnp.array([4, 2, 0])))
  np.testing.assert_allclose(got, np.stack([x[0].mean(0), x[1, :2].mean(0), np.zeros(2)]),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="unknown alignment method 'spline'"):
    S.EarlyFusion(align="spline", features_fn=_features, aligner=align_to_reference,
                  **COMMON).init(jax.random.key(0), _batch(0))
  with pytest.raises(ValueError, match="needs features_fn"):
    S.EarlyFusion(align="dtw", aligner=align_to_reference, **COMMON).init(jax.random.key(0),
                                                                          _batch(0))
  with pytest.raises(ValueError, match="needs aligner"):
    S.EarlyFusion(align="none", **COMMON).init(jax.random.key(0), _batch(0))
  with pytest.raises(ValueError, match="at least 2 distinct streams"):
    S.MulT(streams=("audio",), **COMMON).init(jax.random.key(0), _batch(0))
  with pytest.raises(ValueError, match="no stream 'speech'"):
    S.Unimodal(stream="speech", **COMMON).init(jax.random.key(0), _batch(0))
  assert set(S.SEQUENCE_MODELS) == {"unimodal", "late", "early", "pooled", "mult", "graph"}


def test_positions_encode_the_step_or_the_normalised_time():
  d = 6
  p = np.array([[0.0, 0.5, 2.25], [7.0, 11.5, 30.0]])
  k = np.arange(3)
  want = np.concatenate([np.sin(p[..., None] * 1e4 ** (-2 * k / d)),
                         np.cos(p[..., None] * 1e4 ** (-2 * k / d))], -1)   # float64
  np.testing.assert_allclose(np.asarray(S.sinusoidal_encoding(p, d)), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(S.sinusoidal_positions(5, d)),
                                np.asarray(S.sinusoidal_encoding(np.arange(5.0), d)))
  n = np.array([4, 8, 0])
  np.testing.assert_allclose(np.asarray(S.time_positions(jnp.asarray(n), 8, 12.0)),
                             12.0 * (np.arange(8) + 0.5) / np.maximum(n, 1)[:, None], rtol=1e-6)
  # with a zero projection the embedding is the positions alone: real steps only, on the clock
  x = np.full((3, 8, F), np.nan, np.float32)
  for row, length in enumerate(n):
    x[row, :length] = 1.0
  inputs = {"audio": x, "audio_length": n}
  embed = S.StreamEmbed("audio", d, positions="time", time_scale=12.0)
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                        jax.eval_shape(embed.init, jax.random.key(0), inputs))
  e, lengths = embed.apply(params, inputs)
  valid = np.arange(8) < n[:, None]
  ref = np.where(valid[..., None], S.sinusoidal_encoding(
      12.0 * (np.arange(8) + 0.5) / np.maximum(n, 1)[:, None], d), 0)
  np.testing.assert_allclose(np.asarray(e), ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(lengths), n)
  with pytest.raises(ValueError, match="positions='clock'"):
    S.StreamEmbed("audio", d, positions="clock").init(jax.random.key(0), inputs)
  # the models pass the choice to every embedding, the late-fusion branches' too
  model, params = _model_and_params("late")
  timed = S.LateFusion(streams=("audio", "video", "words"), positions="time", **COMMON)
  assert np.abs(np.asarray(timed.apply(params, _batch(0)) - model.apply(params, _batch(0)))
                ).max() > 1e-4


# -------------------------------------------------------------------------------------- models

@pytest.mark.parametrize("name", list(MODELS))
def test_padding_missing_streams_and_unused_streams(name):
  model, params = _model_and_params(name)
  # a model reading audio and words only (Unimodal reads audio only already)
  sub_model, sub_params = (model, params) if name == "unimodal" else _model_and_params(
      name, ("audio", "words"))
  base = _batch(0)
  missing = dict(base, audio_present=np.array([False, True, True]),
                 video_present=np.array([True, False, True]), video_length=np.array([6, 0, 5]),
                 words_present=np.array([True, True, False]),
                 words_length=np.array([0, 2, 4]))      # row 0: present but empty (no NaN either)
  # the same, with other values in the missing rows' audio (row 0) and words (row 2)
  changed = _batch(5)
  missing_changed = dict(missing, audio=missing["audio"].copy(), words=missing["words"].copy())
  missing_changed["audio"][0] = changed["audio"][0]
  missing_changed["words"][2] = changed["words"][2]
  stacked = _cat(base, missing, missing_changed, dict(base, video=changed["video"]),
                 dict(base, words=changed["words"]))
  long = _with_garbage(base, extra=3)

  @jax.jit
  def run(params, sub_params):
    return (model.apply(params, stacked), model.apply(params, long),
            sub_model.apply(sub_params, stacked))

  full, padded, sub = run(params, sub_params)
  full, sub = np.asarray(full).reshape(5, B, 3), np.asarray(sub).reshape(5, B, 3)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
  assert np.isfinite(full).all() and np.isfinite(sub).all()
  close(np.asarray(padded), full[0])                          # garbage beyond the lengths
  close(full[2], full[1])                                     # a missing stream's values
  assert np.abs(full[1] - full[0]).max() > 1e-4               # missing streams do matter
  close(sub[3], sub[0])                                       # video unused
  if name == "unimodal":
    close(full[4], full[0])                                   # words unused
  else:
    assert np.abs(full[3] - full[0]).max() > 1e-4             # video used by the full model


def test_late_fusion_sums_its_branches():
  model, params = _model_and_params("late")
  batch = _batch(0)

  @jax.jit
  def run(params):
    branches = [S.Unimodal(stream=s, **COMMON).apply({"params": params["params"][f"branch_{s}"]},
                                                     batch) for s in STEPS]
    return model.apply(params, batch), sum(branches)

  late, total = run(params)
  np.testing.assert_allclose(np.asarray(late), np.asarray(total), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["early_dtw", "mult", "graph"])   # the others: through train.py
def test_a_few_adam_steps_lower_the_loss(name):
  model, params = _model_and_params(name, ("audio", "words"))   # two streams: faster to compile
  batch = _batch(7, b=6)
  batch["label"] = np.array([0, 1, 2, 2, 1, 0], np.int32)
  tx = optax.adam(1e-2)

  @jax.jit
  def train(params):
    def step(carry, _):
      p, s = carry
      loss, g = jax.value_and_grad(lambda p: _loss(model, p, batch))(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss
    (p, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=8)
    return losses, _loss(model, p, batch)

  losses, final = train(params)
  assert np.isfinite(np.asarray(losses)).all()
  assert float(final) < 0.8 * float(losses[0]), (np.asarray(losses), float(final))
