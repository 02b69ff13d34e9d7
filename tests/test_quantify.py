"""mmjax.quantify: EMAP against the worked example of Hessel & Lee (2020, appendix) and a full numpy
table of pair logits, exactness on additive models, and modality contribution against direct
numpy evaluation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import quantify
from mmjax.models import LateFusion


def _bilinear(w):
  """A model with cross-modal interactions: logits_c = a^T W_c b + tanh(a_0 + a_1)."""
  def f(a, b):
    return jnp.einsum("pi,ijc,pj->pc", a, w, b) + jnp.tanh(a[:, :1] + a[:, 1:2])
  return f


def np_pair_table(f, a, b):
  """[i, j] = f(a_i, b_j), one pair at a time."""
  return np.stack([np.concatenate([np.asarray(f(a[i:i + 1], b[j:j + 1])) for j in range(len(b))])
                   for i in range(len(a))])


def test_emap_reproduces_the_papers_worked_example():
  # Hessel & Lee 2020, appendix: f(t_i, v_j) over the 3 x 3 pairs of a 3-example set
  logits = np.array([[-1.3, .3, -.2], [.8, 3.0, 1.1], [1.1, -.1, .7]])
  np.testing.assert_allclose(quantify.emap_projection(logits), [-0.8, 2.1, 0.5], atol=1e-6)
  # and tile by tile from a model that looks the table up (a, b are the example indices)
  out = quantify.emap(lambda i, j: jnp.asarray(logits)[i, j], np.arange(3), np.arange(3),
                      block_size=2)
  np.testing.assert_allclose(out.projection, [-0.8, 2.1, 0.5], atol=1e-6)
  np.testing.assert_allclose(out.logits, np.diagonal(logits), atol=1e-6)


@pytest.mark.parametrize("block_size", [1, 4, 11, 32])
def test_emap_tiles_match_the_full_table(x64, block_size):
  rng = np.random.default_rng(0)
  a, b, w = rng.normal(size=(11, 3)), rng.normal(size=(11, 4)), rng.normal(size=(3, 4, 2))
  f = _bilinear(w)
  table = np_pair_table(f, a, b)                                      # (11, 11, 2)
  want = table.mean(1) + table.mean(0) - table.mean((0, 1))
  out = jax.jit(functools.partial(quantify.emap, f, block_size=block_size))(a, b)
  np.testing.assert_allclose(out.projection, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(out.logits, np.asarray(f(a, b)), rtol=1e-12)


def test_emap_is_exact_for_additive_models():
  rng = np.random.default_rng(1)
  a = {"x": rng.normal(size=(20, 5)).astype(np.float32)}              # pytree inputs
  b = rng.normal(size=(20, 3)).astype(np.float32)
  late = LateFusion(out_dim=4, hidden=(8,))                           # mean of per-modality heads
  variables = jax.jit(late.init)(jax.random.key(0), [a["x"], b])
  f = lambda a, b: late.apply(variables, [a["x"], b])  # noqa: E731
  out = jax.jit(functools.partial(quantify.emap, f, block_size=8))(a, b)
  np.testing.assert_allclose(out.projection, out.logits, atol=1e-5)
  labels = np.argmax(np.asarray(out.logits), 1)
  assert quantify.accuracy(out.projection, labels) == 1.0


def test_emap_accuracy_of_a_pure_interaction_is_chance():
  # label = sign(a * b) on a balanced set: the additive part of f(a, b) = a b is exactly 0
  a = np.array([1.0, 1.0, -1.0, -1.0] * 3)
  b = np.array([1.0, -1.0, 1.0, -1.0] * 3)
  labels = (a * b > 0).astype(int)
  scores = quantify.emap_accuracy(lambda a, b: a * b, a, b, labels, block_size=5)
  assert scores["model_accuracy"] == 1.0 and scores["emap_accuracy"] == 0.5


def test_derangement_has_no_fixed_points():
  for n in (2, 10):
    for seed in range(10):
      sigma = np.asarray(quantify.derangement(jax.random.key(seed), n))
      assert sorted(sigma.tolist()) == list(range(n)) and np.all(sigma != np.arange(n))


def test_modality_contribution_matches_direct_evaluation():
  rng = np.random.default_rng(2)
  a = rng.normal(size=(10, 3)).astype(np.float32)
  b = rng.normal(size=(10, 2)).astype(np.float32)
  w = rng.normal(size=(3, 2, 2)).astype(np.float32)
  f = _bilinear(w)
  labels = np.argmax(np.asarray(f(a, b)), 1)
  labels[:3] = 1 - labels[:3]                                         # accuracy 0.7
  key = jax.random.key(3)
  got = quantify.modality_contribution(f, a, b, labels, key=key, baseline="mean",
                                       names=("image", "text"), batch_size=4)
  sigma = np.asarray(quantify.derangement(key, 10))
  acc = lambda x, y: np.mean(np.argmax(np.asarray(f(x, y)), 1) == labels)  # noqa: E731
  mean = lambda x: np.broadcast_to(x.mean(0), x.shape)  # noqa: E731
  want = {"accuracy": 0.7, "without_image": acc(mean(a), b), "without_text": acc(a, mean(b)),
          "mismatched_image": acc(a[sigma], b), "mismatched_text": acc(a, b[sigma])}
  for k, v in want.items():
    assert got[k] == pytest.approx(v), k
    if k != "accuracy":
      assert got[f"{k}_drop"] == pytest.approx(0.7 - v), k
  only_a = lambda a, b: a[:, :2] + 0 * b  # noqa: E731
  got = quantify.modality_contribution(only_a, a, b, labels, key=key, names=("image", "text"))
  assert got["without_text_drop"] == 0 and got["mismatched_text_drop"] == 0


def test_errors_name_the_bad_value():
  with pytest.raises(ValueError, match=r"pair logits \(N, N, \.\.\.\).*got shape \(2, 3\)"):
    quantify.emap_projection(np.ones((2, 3)))
  with pytest.raises(ValueError, match="a has 4 examples and b has 3"):
    quantify.emap(lambda a, b: a, np.ones(4), np.ones(3))
  with pytest.raises(ValueError, match="block_size must be an int >= 1, got 0"):
    quantify.emap(lambda a, b: a, np.ones(4), np.ones(4), block_size=0)
  with pytest.raises(ValueError, match="needs n >= 2 elements, got 1"):
    quantify.derangement(jax.random.key(0), 1)
  with pytest.raises(ValueError, match="unknown baseline 'noise'"):
    quantify.drop_modality(np.ones(3), "noise")
  with pytest.raises(ValueError, match=r"labels of shape \(3,\)"):
    quantify.modality_contribution(lambda a, b: a, np.ones(4), np.ones(4), np.ones(3),
                                   key=jax.random.key(0))
