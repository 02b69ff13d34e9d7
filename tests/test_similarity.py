"""Similarities and kernels against sklearn.metrics.pairwise; CKA against a numpy HSIC."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import pairwise

from mmjax import similarity as sim


@functools.cache
def _jit(fn, **static):
  return jax.jit(functools.partial(fn, **static))


def _data(seed, n=12, m=9, d=5):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)), rng.normal(size=(m, d))


def np_hsic(k, l):
  n = len(k)
  h = np.eye(n) - np.ones((n, n)) / n
  return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def np_cka(k, l):
  return np_hsic(k, l) / np.sqrt(np_hsic(k, k) * np_hsic(l, l))


def np_rbf_gram(x, threshold=1.0):
  """Kornblith et al.'s gram_rbf: bandwidth from the median of all squared distances."""
  sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  return np.exp(-sq / (2 * threshold ** 2 * np.median(sq)))


# ------------------------------------------------------------------------------------ kernels

def test_pairwise_match_sklearn(x64):
  x, y = _data(0)
  x[3] = 0.0                                                         # a zero row for cosine
  np.testing.assert_allclose(_jit(sim.dot_similarity)(x, y), x @ y.T, rtol=1e-12)
  np.testing.assert_allclose(_jit(sim.cosine_similarity)(x, y), pairwise.cosine_similarity(x, y),
                             rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(_jit(sim.rbf_kernel)(x, y), pairwise.rbf_kernel(x, y), rtol=1e-12)
  np.testing.assert_allclose(_jit(sim.rbf_kernel)(x, y, 0.3),
                             pairwise.rbf_kernel(x, y, gamma=0.3), rtol=1e-12)
  np.testing.assert_allclose(_jit(sim.polynomial_kernel)(x, y),
                             pairwise.polynomial_kernel(x, y), rtol=1e-12)
  np.testing.assert_allclose(_jit(sim.polynomial_kernel, degree=2)(x, y, gamma=0.5, coef0=-0.2),
                             pairwise.polynomial_kernel(x, y, degree=2, gamma=0.5, coef0=-0.2),
                             rtol=1e-12)


def test_rbf_kernel_of_a_set_with_itself_has_unit_diagonal(x64):
  x, _ = _data(1)
  np.testing.assert_allclose(np.diag(_jit(sim.rbf_kernel)(x, x)), 1.0, rtol=1e-12)


# ------------------------------------------------------------------ normalisation and distances

def np_squared_distances(x, y):
  """By differences, in float64: no cancellation."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)


def test_squared_distances_match_differences(x64):
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(2, 3, 6, 4)), rng.normal(size=(2, 3, 8, 4))
  np.testing.assert_allclose(_jit(sim.squared_distances)(x, y), np_squared_distances(x, y),
                             rtol=1e-12)
  np.testing.assert_allclose(sim.squared_distances(x, y[0, 0]),           # leading axes broadcast
                             np_squared_distances(x, np.broadcast_to(y[0, 0], (2, 3, 8, 4))),
                             rtol=1e-12)
  np.testing.assert_allclose(sim.squared_distances(x[0, 0, :, 0], y[0, 0, :, 0]),   # (n,), (m,)
                             np_squared_distances(x[0, 0, :, :1], y[0, 0, :, :1]), rtol=1e-12)
  np.testing.assert_allclose(np.diag(sim.squared_distances(x[0, 0], x[0, 0])), 0.0, atol=1e-14)


def test_squared_distances_float32_far_from_the_origin():
  """float32 data offset by 1000: the expansion ||x||^2 + ||y||^2 - 2 x.y alone would lose every
  digit of distances of order 1 (float32 keeps ~7 of the ~1e6 of ||x||^2); centring keeps them."""
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(20, 3)), rng.normal(size=(30, 3))
  got = jax.jit(sim.squared_distances)((x + 1000).astype(np.float32),
                                       (y + 1000).astype(np.float32))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_squared_distances(x, y), rtol=1e-3, atol=1e-3)


def test_l2_normalize(x64):
  x, _ = _data(4)
  x[2] = 0.0
  got = _jit(sim.l2_normalize)(x)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_allclose(got, x / np.maximum(norms, 1e-6), rtol=1e-12)
  np.testing.assert_array_equal(got[2], 0.0)                         # a zero row stays 0, no NaN
  assert sim.l2_normalize(jnp.ones((2, 3), jnp.bfloat16)).dtype == jnp.float32
  assert sim.l2_normalize(jnp.ones((2, 3), jnp.float64)).dtype == jnp.float64


# ---------------------------------------------------------------------------------------- CKA

def test_cka_matches_numpy_hsic(x64):
  x, _ = _data(2, n=20, d=6)
  y = np.tanh(x @ np.random.default_rng(3).normal(size=(6, 4))) + 0.5 * _data(4, n=20, d=4)[0]
  want_linear = np_cka(x @ x.T, y @ y.T)
  np.testing.assert_allclose(_jit(sim.cka)(x @ x.T, y @ y.T), want_linear, rtol=1e-10)
  np.testing.assert_allclose(_jit(sim.linear_cka)(x, y), want_linear, rtol=1e-10)
  np.testing.assert_allclose(_jit(sim.rbf_cka)(x, y), np_cka(np_rbf_gram(x), np_rbf_gram(y)),
                             rtol=1e-10)
  np.testing.assert_allclose(_jit(sim.rbf_cka)(x, y, threshold=0.5),
                             np_cka(np_rbf_gram(x, 0.5), np_rbf_gram(y, 0.5)), rtol=1e-10)


@pytest.mark.parametrize("name", ["linear_cka", "rbf_cka"])
def test_cka_invariances(x64, name):
  f = _jit(getattr(sim, name))
  x, _ = _data(5, n=20, d=6)
  y, _ = _data(6, n=20, d=4)
  q = np.linalg.qr(np.random.default_rng(7).normal(size=(6, 6)))[0]   # orthogonal
  base = f(x, y)
  assert 0 < base < 1
  np.testing.assert_allclose(f(x @ q, y), base, rtol=1e-10)           # orthogonal transform
  np.testing.assert_allclose(f(3.7 * x, 0.2 * y), base, rtol=1e-10)   # isotropic scaling
  np.testing.assert_allclose(f(x + 5.0, y), base, rtol=1e-10)          # translation
  np.testing.assert_allclose(f(x, x), 1.0, rtol=1e-12)                 # CKA(x, x) = 1


def test_linear_cka_not_invariant_to_anisotropic_scaling(x64):
  x, _ = _data(8, n=20, d=6)
  y, _ = _data(9, n=20, d=4)
  scaled = x * np.array([10.0, 1, 1, 1, 1, 0.1])
  assert abs(_jit(sim.linear_cka)(scaled, y) - _jit(sim.linear_cka)(x, y)) > 1e-3


# --------------------------------------------------------------------- float32, bf16, errors

def _all(x, y):
  return {"dot": sim.dot_similarity(x, y), "cosine": sim.cosine_similarity(x, y),
          "rbf": sim.rbf_kernel(x, y), "polynomial": sim.polynomial_kernel(x, y),
          "cka": sim.cka(x @ x.T, y @ y.T), "linear_cka": sim.linear_cka(x, y),
          "rbf_cka": sim.rbf_cka(x, y)}


def test_float32_and_bf16():
  x, y = _data(10, n=16, m=16, d=8)
  want = {"dot": x @ y.T, "cosine": pairwise.cosine_similarity(x, y),
          "rbf": pairwise.rbf_kernel(x, y), "polynomial": pairwise.polynomial_kernel(x, y),
          "cka": np_cka(x @ x.T, y @ y.T), "linear_cka": np_cka(x @ x.T, y @ y.T),
          "rbf_cka": np_cka(np_rbf_gram(x), np_rbf_gram(y))}
  f = jax.jit(_all)
  for name, value in f(x.astype(np.float32), y.astype(np.float32)).items():
    assert value.dtype == jnp.float32, name
    np.testing.assert_allclose(value, want[name], rtol=1e-4, atol=1e-5, err_msg=name)
  for name, value in f(jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)).items():
    assert value.dtype == jnp.float32 and np.all(np.isfinite(value)), name


def test_errors_name_the_shapes():
  x = np.ones((4, 3))
  with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 2\)"):
    sim.cosine_similarity(x, np.ones((4, 2)))
  with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
    sim.linear_cka(x, np.ones((5, 3)))
  with pytest.raises(ValueError, match=r"\(4, 4\) and \(5, 5\)"):
    sim.cka(np.eye(4), np.eye(5))
  with pytest.raises(ValueError, match=r"squared_distances .* \(4, 3\) and \(5, 2\)"):
    sim.squared_distances(x, np.ones((5, 2)))
