"""mmjax.align against independent references: float64 numpy Sinkhorn (scaling form), scipy's
linear_sum_assignment, a plain double-loop DTW, brute-force segmentations, sklearn's KMeans, and the
attention layers' own outputs.

Jitted functions are cached and shapes reused, so the file compiles each function a few times only.
"""
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from mmjax import align
from mmjax.models import CrossModalTransformer, two_tower


@functools.cache
def _jit(fn, **static):
  return jax.jit(functools.partial(fn, **static))


def _random_variables(model, *args, seed=0):
  """Variables of the model's shapes filled with N(0, 0.3^2) numbers: no compiled init (slow)."""
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), *args))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


# ------------------------------------------------------------------------------ numpy references

def np_sinkhorn(c, a, b, eps, tau_a=None, tau_b=None, iters=3000):
  """Scaling-form Sinkhorn in float64, u = (a / K v)^(tau/(tau+eps)) (exponent 1 when balanced)."""
  k = np.exp(-c / eps)
  pa = 1.0 if tau_a is None else tau_a / (tau_a + eps)
  pb = 1.0 if tau_b is None else tau_b / (tau_b + eps)
  u, v = np.ones(len(a)), np.ones(len(b))
  for _ in range(iters):
    u = (a / (k @ v)) ** pa
    v = (b / (k.T @ u)) ** pb
  return u[:, None] * k * v[None, :]


def np_dtw(c):
  """Textbook O(nm) double loop, then backtracking with the diagonal preferred on ties."""
  n, m = c.shape
  r = np.full((n + 1, m + 1), np.inf)
  r[0, 0] = 0
  for i in range(1, n + 1):
    for j in range(1, m + 1):
      r[i, j] = c[i - 1, j - 1] + min(r[i - 1, j - 1], r[i - 1, j], r[i, j - 1])
  path, i, j = np.zeros((n, m)), n, m
  while True:
    path[i - 1, j - 1] = 1
    if i == 1 and j == 1:
      return r[n, m], path
    i, j = [(i - 1, j - 1), (i - 1, j), (i, j - 1)][
        int(np.argmin([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]]))]


def np_segmentation_cost(x, bounds):
  b = [0, *bounds, len(x)]
  return sum(((x[s:t] - x[s:t].mean(0)) ** 2).sum() for s, t in zip(b[:-1], b[1:]))


def _bounds(labels):
  return tuple(int(t) for t in np.flatnonzero(np.diff(np.asarray(labels))) + 1)


def _scipy_columns(c, maximize=False):
  rows, cols = linear_sum_assignment(c, maximize=maximize)
  out = -np.ones(c.shape[0], int)
  out[rows] = cols
  return out


# -------------------------------------------------------------------------------------- sinkhorn
# One shape, (2, 5, 7), and one setting throughout, so that these tests share their compilations.

_SINKHORN = dict(epsilon=0.1, num_iters=500)


def _marginals(rng, n, m):
  a, b = rng.random(n) + 0.2, rng.random(m) + 0.2
  return a / a.sum(), b / b.sum()


def _padded_problem(seed):
  """Costs (2, 5, 7) and marginals; problem 1 has a zero-weight row 4 and column 2 (padding)."""
  rng = np.random.default_rng(seed)
  c = rng.random((2, 5, 7))
  a0, b0 = _marginals(rng, 5, 7)
  a1, b1 = _marginals(rng, 4, 6)
  return c, np.stack([a0, np.append(a1, 0.0)]), np.stack([b0, np.insert(b1, 2, 0.0)])


def test_sinkhorn_matches_float64_numpy(x64):
  c, a, b = _padded_problem(0)
  out = _jit(align.sinkhorn, **_SINKHORN)(c, a, b)
  assert out.plan.shape == (2, 5, 7) and out.cost.shape == (2,)
  want = np_sinkhorn(c[0], a[0], b[0], 0.1)
  np.testing.assert_allclose(out.plan[0].sum(1), a[0], atol=1e-6)
  np.testing.assert_allclose(out.plan[0].sum(0), b[0], atol=1e-6)
  np.testing.assert_allclose(out.plan[0], want, atol=1e-9)
  np.testing.assert_allclose(out.cost[0], (want * c[0]).sum(), rtol=1e-9)
  assert np.all(out.error < 1e-6)
  # zero weights are padding: the plan of the problem without them, and zeros
  assert np.all(out.plan[1, 4] == 0) and np.all(out.plan[1, :, 2] == 0)
  small = np_sinkhorn(np.delete(c[1, :4], 2, axis=1), a[1, :4], np.delete(b[1], 2), 0.1)
  np.testing.assert_allclose(np.delete(out.plan[1, :4], 2, axis=1), small, atol=1e-9)
  np.testing.assert_allclose(out.cost[1], (small * np.delete(c[1, :4], 2, axis=1)).sum(),
                             rtol=1e-9)


def test_unbalanced_sinkhorn_matches_float64_numpy(x64):
  c, a, b = _padded_problem(1)
  b = 2 * b                                          # unequal masses: only unbalanced OT fits
  out = _jit(align.sinkhorn, **_SINKHORN, tau_a=0.5, tau_b=2.0)(c, a, b)
  want = np_sinkhorn(c[0], a[0], b[0], 0.1, tau_a=0.5, tau_b=2.0)
  np.testing.assert_allclose(out.plan[0], want, atol=1e-9)
  np.testing.assert_allclose(out.cost[0], (want * c[0]).sum(), rtol=1e-9)


def test_sinkhorn_gradient_matches_finite_differences(x64):
  c, a, b = _padded_problem(2)
  value = lambda c: jnp.sum(_jit(align.sinkhorn, **_SINKHORN)(c, a, b).cost)  # noqa: E731
  g = jax.grad(value)(c)
  assert np.all(np.isfinite(g)) and np.all(g[1, 4] == 0)             # none through padding
  rng = np.random.default_rng(3)
  for _ in range(2):
    d = rng.normal(size=c.shape)
    fd = (value(c + 1e-6 * d) - value(c - 1e-6 * d)) / 2e-6
    np.testing.assert_allclose(np.sum(g * d), fd, rtol=1e-6)


# --------------------------------------------------------------------------------- hard matching

@pytest.mark.parametrize("shape", [(1, 4), (4, 1), (9, 5), (2, 6, 6)])
def test_hard_matching_equals_scipy(x64, shape):
  rng = np.random.default_rng(sum(shape))
  for _ in range(4):
    c = rng.normal(size=shape)
    got = np.asarray(_jit(align.hard_matching)(c)).reshape((-1, shape[-2]))
    for k, ck in enumerate(c.reshape((-1,) + shape[-2:])):
      np.testing.assert_array_equal(got[k], _scipy_columns(ck))


def test_hard_matching_float32_and_maximize():
  rng = np.random.default_rng(4)
  c = rng.random((8, 9, 9)).astype(np.float32)
  got = np.asarray(_jit(align.hard_matching)(c))
  best = np.asarray(_jit(align.hard_matching, maximize=True)(c))
  for k in range(8):
    np.testing.assert_array_equal(got[k], _scipy_columns(c[k]))
    np.testing.assert_array_equal(best[k], _scipy_columns(c[k], maximize=True))


def test_hard_matching_from_sinkhorn_plan_is_optimal(x64):
  c = np.random.default_rng(5).random((2, 6, 6))
  plan = _jit(align.sinkhorn, **_SINKHORN)(c).plan
  got = np.asarray(_jit(align.hard_matching)(-jnp.log(plan)))       # any eps: the optimum of c
  for k in range(2):
    np.testing.assert_array_equal(got[k], _scipy_columns(c[k]))


def test_hard_matching_avoids_forbidden_pairs(x64):
  c = np.random.default_rng(6).normal(size=(2, 6, 6))
  c[0, 0, :5] = np.inf                               # row 0 may only take column 5
  c[1, 2, 3] = np.nan
  got = np.asarray(_jit(align.hard_matching)(c))
  for k in range(2):
    np.testing.assert_array_equal(got[k], _scipy_columns(np.where(np.isfinite(c[k]), c[k], 1e9)))
  assert got[0, 0] == 5


# ------------------------------------------------------------------------------------- OT loss

def np_cosine_cost(x, y):
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  y = y / np.linalg.norm(y, axis=-1, keepdims=True)
  return 1 - x @ y.T


def test_ot_alignment_loss_value_and_envelope_gradient(x64):
  rng = np.random.default_rng(6)
  x, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 5, 3))
  mask_x = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  mask_y = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0]], bool)
  vg = jax.jit(jax.value_and_grad(functools.partial(align.ot_alignment_loss, epsilon=0.1,
                                                    num_iters=500)))
  loss, grad = vg(x, y, mask_x=mask_x, mask_y=mask_y)
  plans, want = [], 0.0
  for k in range(2):
    xk, yk = x[k][mask_x[k]], y[k][mask_y[k]]
    p = np_sinkhorn(np_cosine_cost(xk, yk), np.full(len(xk), 1 / len(xk)),
                    np.full(len(yk), 1 / len(yk)), 0.1)
    plans.append(p)
    want += (p * np_cosine_cost(xk, yk)).sum() / 2
  np.testing.assert_allclose(loss, want, rtol=1e-8)
  # gradient: that of the cost with the plan held fixed (finite differences in numpy)
  d = rng.normal(size=x.shape)

  def fixed_plan_loss(x):
    return sum((p * np_cosine_cost(x[k][mask_x[k]], y[k][mask_y[k]])).sum()
               for k, p in enumerate(plans)) / 2

  fd = (fixed_plan_loss(x + 1e-6 * d) - fixed_plan_loss(x - 1e-6 * d)) / 2e-6
  np.testing.assert_allclose(np.sum(grad * d), fd, rtol=1e-6)
  assert np.all(grad[0, 3] == 0)                                      # padding gets no gradient


# ------------------------------------------------------------------------------------------- DTW

@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (6, 8)])
def test_dtw_matches_plain_dynamic_programming(x64, shape):
  c = np.random.default_rng(sum(shape)).random(shape)
  out = _jit(align.dtw)(c)
  value, path = np_dtw(c)
  np.testing.assert_allclose(out.value, value, rtol=1e-12)
  np.testing.assert_array_equal(out.path, path)
  np.testing.assert_allclose(np.sum(out.path * c), out.value, rtol=1e-12)


def test_dtw_batched_on_sequences(x64):
  rng = np.random.default_rng(7)
  x, y = rng.normal(size=(2, 3, 6, 2)), rng.normal(size=(2, 3, 8, 2))
  c = align.squared_distances(x, y)
  np.testing.assert_allclose(c[1, 2], ((x[1, 2][:, None] - y[1, 2][None]) ** 2).sum(-1),
                             rtol=1e-12)
  out = _jit(align.dtw)(c)
  assert out.value.shape == (2, 3) and out.path.shape == (2, 3, 6, 8)
  for k, l in itertools.product(range(2), range(3)):
    np.testing.assert_allclose(out.value[k, l], np_dtw(np.asarray(c[k, l]))[0], rtol=1e-12)
  np.testing.assert_allclose(align.warping_curve(np.eye(5)), np.arange(5))


def test_soft_dtw_tends_to_dtw(x64):
  c = np.random.default_rng(8).random((6, 9))
  hard = np_dtw(c)[0]
  bound = np.log(3) * (6 + 9 - 1)
  for gamma in (1.0, 0.1, 0.01, 1e-3):
    soft = _jit(align.soft_dtw)(c, gamma)
    assert hard - gamma * bound <= soft <= hard + 1e-12
  np.testing.assert_allclose(_jit(align.soft_dtw)(c, 1e-3), hard, atol=1e-6)
  np.testing.assert_allclose(_jit(align.soft_dtw_alignment)(c, 1e-3), np_dtw(c)[1], atol=1e-6)


def test_soft_dtw_gradient_matches_finite_differences(x64):
  rng = np.random.default_rng(9)
  x, y = rng.normal(size=(7, 2)), rng.normal(size=(5, 2))
  vg = jax.jit(jax.value_and_grad(lambda x: align.soft_dtw(align.squared_distances(x, y), 0.5)))
  _, g = vg(x)
  for _ in range(3):
    d = rng.normal(size=x.shape)
    fd = (vg(x + 1e-6 * d)[0] - vg(x - 1e-6 * d)[0]) / 2e-6
    np.testing.assert_allclose(np.sum(g * d), fd, rtol=1e-7)


# ---------------------------------------------------------------------------------- segmentation

def test_change_points_fixed_number_is_optimal(x64):
  rng = np.random.default_rng(10)
  x = rng.normal(size=(9, 2))
  for k in (1, 3, 9):
    labels = _jit(align.change_points, num_segments=k)(x)
    best = min(itertools.combinations(range(1, 9), k - 1),
               key=lambda b: np_segmentation_cost(x, b))
    assert len(_bounds(labels)) == k - 1 and np.asarray(labels)[0] == 0
    np.testing.assert_allclose(np_segmentation_cost(x, _bounds(labels)),
                               np_segmentation_cost(x, best), rtol=1e-12)


def test_change_points_penalised_is_optimal(x64):
  rng = np.random.default_rng(11)
  x = 0.3 * rng.normal(size=(10, 1)) + np.repeat([0.0, 3.0, -1.0], [4, 3, 3])[:, None]
  every = [b for k in range(10) for b in itertools.combinations(range(1, 10), k)]
  for penalty in (0.05, 0.5, 20.0):
    labels = _jit(align.change_points)(x, penalty=penalty)
    total = lambda b: np_segmentation_cost(x, b) + penalty * (len(b) + 1)  # noqa: E731
    np.testing.assert_allclose(total(_bounds(labels)), min(map(total, every)), rtol=1e-12)
  assert _bounds(_jit(align.change_points)(x, penalty=0.5)) == (4, 7)   # the true changes


def test_segment_means_and_batched_change_points():
  x = np.repeat(np.array([[0.0, 1.0], [5.0, 5.0], [2.0, -3.0]], np.float32), [3, 4, 2], axis=0)
  noisy = x + 0.01 * np.random.default_rng(12).normal(size=(2,) + x.shape).astype(np.float32)
  labels = _jit(align.change_points, num_segments=3)(noisy)
  np.testing.assert_array_equal(labels, np.broadcast_to(np.repeat([0, 1, 2], [3, 4, 2]), (2, 9)))
  np.testing.assert_allclose(align.segment_means(x, labels[0], 4),
                             [[0, 1], [5, 5], [2, -3], [0, 0]], atol=1e-6)


def test_kmeans_matches_sklearn_lloyd(x64):
  rng = np.random.default_rng(13)
  x = np.concatenate([rng.normal(size=(30, 2)) + c for c in ((0, 0), (4, 4), (0, 5))])
  init = x[[0, 1, 31]]                      # two seeds in the first blob, none in the third
  out = _jit(align.kmeans, k=3)(x, init=init)
  ref = KMeans(3, init=init, n_init=1, algorithm="lloyd", tol=0, max_iter=50).fit(x)
  np.testing.assert_allclose(out.centroids, ref.cluster_centers_, rtol=1e-10)
  np.testing.assert_allclose(out.inertia, ref.inertia_, rtol=1e-10)
  np.testing.assert_array_equal(out.labels, ref.labels_)
  tokens = _jit(align.quantize)(x[None, :5], out.centroids)
  np.testing.assert_array_equal(tokens[0], ref.labels_[:5])
  seeded = _jit(align.kmeans, k=3)(x, key=jax.random.key(0))      # k-means++ seeds: 3 blobs found
  best = KMeans(3, n_init=10, random_state=0).fit(x)
  np.testing.assert_allclose(seeded.inertia, best.inertia_, rtol=1e-10)


# ------------------------------------------------------------------------------------- attention

def test_capture_attention_reproduces_layer_output():
  model = CrossModalTransformer(depth=1, num_heads=2, mlp_dim=16)
  rng = np.random.default_rng(14)
  text, patches = rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 5, 6))
  lengths = np.array([5, 3])
  variables = _random_variables(model, text, patches, lengths)

  @jax.jit
  def forward(variables, text, patches, lengths):
    weights = align.capture_attention(model, variables, text, patches, lengths,
                                      kv_lengths=lengths)
    keep = lambda m, name: m.name in ("attn", "value")  # noqa: E731
    _, state = model.apply(variables, text, patches, lengths, capture_intermediates=keep,
                           mutable=["intermediates"])
    return weights, traverse_util.flatten_dict(state["intermediates"], sep="/")

  weights, flat = forward(variables, text, patches, lengths)
  assert list(weights) == ["block_0/attn"]
  w = np.asarray(weights["block_0/attn"])                             # (B, heads, T, S)
  np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-6)
  assert np.all(w[1, :, :, 3:] == 0)                                  # padded patches
  # the layer's own output, rebuilt from these weights and its value and output projections
  v = flat["block_0/attn/value/__call__"][0]                          # (B, S, heads, hd)
  mixed = jnp.einsum("bnts,bsnh->btnh", w, v)
  out_params = nn.unbox(variables)["params"]["block_0"]["attn"]["out"]
  rebuilt = nn.DenseGeneral(8, axis=(-2, -1)).apply({"params": out_params}, mixed)
  np.testing.assert_allclose(rebuilt, flat["block_0/attn/__call__"][0], atol=1e-5)
  alignment = align.attention_alignment([w, w])
  np.testing.assert_allclose(alignment, w.mean(1), rtol=1e-6)


def test_two_tower_patch_and_token_embeddings():
  # one patch per image and pool='gap': the single patch embedding is the image embedding
  model = two_tower("tiny", image_overrides=dict(patch_size=16, pool="gap", depth=1),
                    text_overrides=dict(context_length=8, depth=1))
  rng = np.random.default_rng(15)
  images = rng.random((2, 16, 16, 3)).astype(np.float32)
  tokens = np.array([[257, 10, 11, 12, 258, 0, 0, 0], [257, 20, 258, 0, 0, 0, 0, 0]], np.int32)
  variables = _random_variables(model, images, tokens)

  keep = lambda m, name: m.name == "attn" and m.parent.name == "block_0"  # noqa: E731

  @jax.jit
  def forward(variables, images, tokens):
    _, state = model.apply(variables, images, method="encode_image", capture_intermediates=keep,
                           mutable=["intermediates"])
    return (align.patch_embeddings(model, variables, images),         # (2, 1, 64)
            model.apply(variables, images, method="encode_image"),
            align.patch_embeddings(model, variables, images, readout="value"),
            traverse_util.flatten_dict(state["intermediates"], sep="/"),
            align.token_embeddings(model, variables, tokens),         # (2, 8, 64)
            model.apply(variables, tokens, method="encode_text"))

  patches, image, values, captured, per_token, text = forward(variables, images, tokens)
  np.testing.assert_allclose(patches[:, 0], image, atol=1e-5)
  np.testing.assert_allclose(per_token[[0, 1], [4, 2]], text, atol=1e-5)
  # MaskCLIP readout: with a single token, attention is the identity mixing, so out(v(LN(x))) is
  # the attention layer's output; then ln_post and the projection, written out in numpy
  attn = np.asarray(captured["image_encoder/encoder/block_0/attn/__call__"][0])[:, 0]   # (2, 64)
  ln = variables["params"]["image_encoder"]["ln_post"]
  z = (attn - attn.mean(-1, keepdims=True)) / np.sqrt(attn.var(-1, keepdims=True) + 1e-5)
  z = (z * ln["scale"] + ln["bias"]) @ variables["params"]["image_proj"]["kernel"]
  np.testing.assert_allclose(values[:, 0], z / np.linalg.norm(z, axis=-1, keepdims=True),
                             atol=1e-5)
  spans = np.array([[[1, 4], [4, 5]], [[1, 2], [0, 0]]])
  got = align.span_embeddings(per_token, spans)
  want = np.asarray(per_token[0, 1:4]).mean(0)
  np.testing.assert_allclose(got[0, 0], want / np.linalg.norm(want), atol=1e-6)
  np.testing.assert_allclose(got[1, 1], 0)
  q, k = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))
  cos = np.einsum("bte,bse->bts", q / np.linalg.norm(q, axis=-1, keepdims=True),
                  k / np.linalg.norm(k, axis=-1, keepdims=True))
  soft = np.exp(cos / 0.2) / np.exp(cos / 0.2).sum(-1, keepdims=True)
  np.testing.assert_allclose(align.similarity_alignment(q, k, temperature=0.2), soft, rtol=1e-5)


def test_occlusion_alignment_matches_explicitly_occluded_images():
  model = two_tower("tiny", image_overrides=dict(patch_size=16, depth=1),
                    text_overrides=dict(context_length=8, depth=1))
  rng = np.random.default_rng(16)
  images = rng.random((2, 32, 32, 3)).astype(np.float32)              # 2 x 2 patches of 16
  variables = _random_variables(model, images, np.zeros((2, 8), np.int32))
  words = rng.normal(size=(2, 3, 64))
  words /= np.linalg.norm(words, axis=-1, keepdims=True)
  got = jax.jit(lambda v, x, t: align.occlusion_alignment(model, v, x, t))(variables, images,
                                                                          words)
  hidden = []                                                         # (B, 1 + N, 32, 32, 3)
  for image in images:
    versions = [image]
    for r, c in itertools.product(range(2), range(2)):                # raster order
      x = image.copy()
      x[16 * r:16 * (r + 1), 16 * c:16 * (c + 1)] = image.mean((0, 1))
      versions.append(x)
    hidden.append(versions)
  emb = jax.jit(lambda v, x: model.apply(v, x, method="encode_image"))(
      variables, np.reshape(hidden, (-1, 32, 32, 3)))
  sim = np.einsum("bne,bwe->bwn", np.reshape(emb, (2, 5, 64)), words)
  np.testing.assert_allclose(got, sim[:, :, :1] - sim[:, :, 1:], atol=1e-5)


# ---------------------------------------------------------------------------------------- errors

def test_errors_name_the_bad_value():
  c = np.ones((3, 4))
  with pytest.raises(ValueError, match=r"got shape \(4,\)"):
    align.sinkhorn(np.ones(4))
  with pytest.raises(ValueError, match=r"a has shape \(5,\), expected \(3,\)"):
    align.sinkhorn(c, np.ones(5) / 5)
  with pytest.raises(ValueError, match="epsilon must be a positive number, got 0"):
    align.sinkhorn(c, epsilon=0)
  with pytest.raises(ValueError, match="tau_a must be a positive number, got -1"):
    align.sinkhorn(c, tau_a=-1)
  with pytest.raises(ValueError, match="num_iters must be an int >= 1, got 0"):
    align.sinkhorn(c, num_iters=0)
  with pytest.raises(ValueError, match=r"hard_matching: cost must be .* got shape \(3,\)"):
    align.hard_matching(np.ones(3))
  with pytest.raises(ValueError, match=r"\(2, 3, 4\) and \(2, 5, 3\)"):
    align.ot_alignment_loss(np.ones((2, 3, 4)), np.ones((2, 5, 3)))
  with pytest.raises(ValueError, match="gamma must be a positive number, got 0"):
    align.soft_dtw(c, gamma=0)
  with pytest.raises(ValueError, match="exactly one of num_segments and penalty"):
    align.change_points(np.ones(5))
  with pytest.raises(ValueError, match=r"num_segments must be an int in \[1, n=5\].* got 6"):
    align.change_points(np.ones(5), num_segments=6)
  with pytest.raises(ValueError, match=r"k must be an int in \[1, n=5\], got 0"):
    align.kmeans(np.ones((5, 2)), 0, key=jax.random.key(0))
  with pytest.raises(ValueError, match="needs a PRNG key"):
    align.kmeans(np.ones((5, 2)), 2)
  with pytest.raises(ValueError, match=r"init has shape \(3, 2\), expected \(k, d\) = \(2, 2\)"):
    align.kmeans(np.ones((5, 2)), 2, init=np.ones((3, 2)))
  with pytest.raises(ValueError, match="unknown readout 'keys'"):
    align.patch_embeddings(two_tower("tiny"), {}, np.ones((1, 8, 8, 3)), readout="keys")
  dense = {"params": {"kernel": np.ones((3, 2)), "bias": np.zeros(2)}}
  with pytest.raises(ValueError, match="no mmjax Attention layer ran in Dense"):
    align.capture_attention(nn.Dense(2), dense, np.ones((1, 3)))
  with pytest.raises(ValueError, match="expected a TwoTower"):
    align.patch_embeddings(CrossModalTransformer(1, 1, 4), {}, np.ones((1, 8, 8, 3)))
