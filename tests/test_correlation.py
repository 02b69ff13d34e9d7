"""Correlation losses against independent float64 references: scipy's generalized eigh for CCA,
numpy eigh of M for GCCA, numpy transcriptions of the papers' formulas for the rest.

Every call goes through jax.jit (which also tests that the functions jit); the jitted functions are
cached and shapes reused so that tests share compilations and the file runs in a few seconds.
VariantsTest also runs each loss un-jitted (chex variants) and vmapped over a batch of problems.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from absl.testing import parameterized
from sklearn.cross_decomposition import CCA

from mmjax.losses import (barlow_twins_loss, canonical_correlations, cca_loss, gcca_loss,
                          soft_cca_loss, vicreg_loss)
from tests import loss_checks


@functools.cache
def _jit(fn, **static):
  """jax.jit(fn) with the keyword arguments `static` fixed; others (ridge) stay traced."""
  return jax.jit(functools.partial(fn, **static))


@functools.cache
def _cca_value_and_grad(objective, k):
  return jax.jit(jax.value_and_grad(functools.partial(cca_loss, objective=objective, k=k),
                                    argnums=(0, 1)))


def _views(seed, n, dx, dy, shared=2):
  """Two views that share `shared` latent signals, so the correlations are spread out."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, shared))
  x = z @ rng.normal(size=(shared, dx)) + rng.normal(size=(n, dx))
  y = z @ rng.normal(size=(shared, dy)) + rng.normal(size=(n, dy))
  return x, y


def _whitened(seed, n, d):
  """A view whose sample covariance is the identity (to rounding): orthonormal centred columns."""
  a = np.random.default_rng(seed).normal(size=(n, d))
  q, _ = np.linalg.qr(a - a.mean(0))
  return q * np.sqrt(n - 1)


# ----------------------------------------------------------------------------- numpy references

def np_cov(a, b):
  a, b = a - a.mean(0), b - b.mean(0)
  return a.T @ b / (len(a) - 1)


def np_canonical_correlations(x, y, ridge=0.0):
  """Non-negative roots of [[0, Sxy], [Syx, 0]] v = rho diag(Sxx, Syy) v, by scipy's generalized
  eigh, largest first."""
  dx, dy = x.shape[1], y.shape[1]
  sxx, syy, sxy = np_cov(x, x) + ridge * np.eye(dx), np_cov(y, y) + ridge * np.eye(dy), np_cov(x, y)
  a = np.block([[np.zeros((dx, dx)), sxy], [sxy.T, np.zeros((dy, dy))]])
  b = scipy.linalg.block_diag(sxx, syy)
  rho = scipy.linalg.eigh(a, b, eigvals_only=True)[::-1]
  return rho[:min(dx, dy)]


def np_cca_loss(x, y, objective, k=None, ridge=0.0):
  rho = np_canonical_correlations(x, y, ridge)
  return {"trace": -rho.sum(), "topk": -rho[:k].sum(), "squares": -(rho ** 2).sum()}[objective]


def np_gcca_loss(views, k, ridge):
  m = 0
  for v in views:
    v = v - v.mean(0)
    m = m + v @ np.linalg.solve(v.T @ v + (len(v) - 1) * ridge * np.eye(v.shape[1]), v.T)
  return -np.sort(np.linalg.eigh(m)[0])[::-1][:k].sum()


def np_batch_norm(z, eps):
  z = z - z.mean(0)
  return z / np.sqrt((z ** 2).mean(0) + eps)


def np_off_diagonal(c):
  return c[~np.eye(len(c), dtype=bool)]


def np_soft_cca_loss(x, y, lam=1.0, eps=1e-5, prev=None, momentum=0.0):
  zx, zy = np_batch_norm(x, eps), np_batch_norm(y, eps)
  n = len(x)
  phis = [zx.T @ zx / n, zy.T @ zy / n]
  if prev is not None:
    phis = [momentum * p + (1 - momentum) * c for p, c in zip(prev, phis)]
  dist = ((zx - zy) ** 2).sum(1).mean()
  return dist + lam * sum(np.abs(np_off_diagonal(p)).sum() for p in phis), phis


def np_barlow_twins_loss(za, zb, lam=5e-3, eps=1e-5):
  c = np_batch_norm(za, eps).T @ np_batch_norm(zb, eps) / len(za)
  return ((1 - np.diag(c)) ** 2).sum() + lam * (np_off_diagonal(c) ** 2).sum()


def np_vicreg_loss(za, zb, sim=25.0, var=25.0, cov=1.0, eps=1e-4):
  d = za.shape[1]
  inv = ((za - zb) ** 2).mean()
  v = sum(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + eps)).mean() for z in (za, zb)) / 2
  c = sum((np_off_diagonal(np_cov(z, z)) ** 2).sum() / d for z in (za, zb))
  return sim * inv + var * v + cov * c


# ---------------------------------------------------------------------- canonical correlations

@pytest.mark.parametrize("ridge", [0.0, 1e-2])
def test_canonical_correlations_match_generalized_eigh(x64, ridge):
  x, y = _views(0, 50, 4, 6)
  got = _jit(canonical_correlations)(x, y, ridge=ridge)
  assert got.dtype == jnp.float64 and got.shape == (4,)
  np.testing.assert_allclose(got, np_canonical_correlations(x, y, ridge), rtol=1e-9, atol=1e-12)


def test_first_correlation_matches_sklearn_cca(x64):
  x, y = _views(1, 50, 4, 6)
  u, v = CCA(n_components=1, scale=False, max_iter=5000, tol=1e-12).fit(x, y).transform(x, y)
  want = abs(np.corrcoef(u[:, 0], v[:, 0])[0, 1])
  np.testing.assert_allclose(_jit(canonical_correlations)(x, y, ridge=0.0)[0], want, rtol=1e-6)


def test_correlations_invariant_to_invertible_map_of_one_view(x64):
  x, y = _views(2, 50, 4, 6)
  a = np.random.default_rng(3).normal(size=(6, 6)) + 3 * np.eye(6)   # invertible
  f = _jit(canonical_correlations)
  np.testing.assert_allclose(f(x + 7.0, y @ a, ridge=0.0), f(x, y, ridge=0.0), rtol=1e-9)


# ---------------------------------------------------------------------------- cca_loss, its grad

def _check_grad_fd(vg, x, y, seed, h=1e-5, rtol=1e-6):
  """vg's gradient along random directions against central finite differences of its value."""
  _, (gx, gy) = vg(x, y, ridge=0.0)
  assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))
  rng = np.random.default_rng(seed)
  for _ in range(3):
    vx, vy = rng.normal(size=x.shape), rng.normal(size=y.shape)
    up, down = vg(x + h * vx, y + h * vy, ridge=0.0)[0], vg(x - h * vx, y - h * vy, ridge=0.0)[0]
    fd = (up - down) / (2 * h)
    np.testing.assert_allclose(np.sum(gx * vx) + np.sum(gy * vy), fd, rtol=rtol, atol=1e-9)


@pytest.mark.parametrize("objective,k", [("trace", None), ("topk", 2), ("squares", None)])
@pytest.mark.parametrize("whitened", [False, True])
def test_cca_loss_value_and_gradient(x64, objective, k, whitened):
  x, y = _views(4, 30, 4, 5)
  if whitened:   # x's sample covariance is exactly I: repeated eigenvalues of Sxx
    x = _whitened(5, 30, 4)
    np.testing.assert_allclose(np_cov(x, x), np.eye(4), atol=1e-13)
  vg = _cca_value_and_grad(objective, k)
  np.testing.assert_allclose(vg(x, y, ridge=0.0)[0], np_cca_loss(x, y, objective, k), rtol=1e-9)
  _check_grad_fd(vg, x, y, seed=6)


@pytest.mark.parametrize("objective", ["trace", "squares"])
def test_cca_loss_gradient_at_repeated_correlations(x64, objective):
  # x whitened and y = [x rotated, noise]: all four correlations are exactly 1.
  x = _whitened(7, 30, 4)
  rng = np.random.default_rng(8)
  rot = np.linalg.qr(rng.normal(size=(4, 4)))[0]
  y = np.concatenate([x @ rot, rng.normal(size=(30, 1))], axis=1)
  vg = _cca_value_and_grad(objective, None)
  np.testing.assert_allclose(vg(x, y, ridge=0.0)[0], -4.0, rtol=1e-12)
  _check_grad_fd(vg, x, y, seed=9)


# ------------------------------------------------------------------------------------------ GCCA

def test_gcca_loss_matches_eigh_of_m(x64):
  rng = np.random.default_rng(10)
  views = [rng.normal(size=(25, d)) for d in (3, 4, 5)]
  got = _jit(gcca_loss, k=2)(views, ridge=1e-2)
  np.testing.assert_allclose(got, np_gcca_loss(views, 2, 1e-2), rtol=1e-10)


def test_gcca_loss_is_reconstruction_error_minus_kj(x64):
  rng = np.random.default_rng(11)
  views = [rng.normal(size=(25, d)) for d in (3, 4, 5)]
  cs = [v - v.mean(0) for v in views]
  m = sum(c @ np.linalg.pinv(c) for c in cs)                         # sum of projections
  g = np.linalg.eigh(m)[1][:, ::-1][:, :2]                           # top-2 eigenvectors
  recon = sum(((g - c @ np.linalg.lstsq(c, g, rcond=None)[0]) ** 2).sum() for c in cs)
  got = _jit(gcca_loss, k=2)(views, ridge=0.0)
  np.testing.assert_allclose(got, recon - 2 * 3, rtol=1e-10)         # k J = 2 * 3


def test_gcca_two_views_is_k_plus_top_k_correlations(x64):
  x, y = _views(12, 50, 4, 6)
  rho = np_canonical_correlations(x, y)
  got = _jit(gcca_loss, k=3)([x, y], ridge=0.0)
  np.testing.assert_allclose(-got, 3 + rho[:3].sum(), rtol=1e-10)


# --------------------------------------------------------------- soft CCA, Barlow Twins, VICReg

def test_soft_cca_loss_matches_numpy(x64):
  x, y = _views(13, 32, 8, 8)
  got = _jit(soft_cca_loss)(x, y, decorrelation_weight=0.3)
  np.testing.assert_allclose(got, np_soft_cca_loss(x, y, 0.3)[0], rtol=1e-10)


def test_soft_cca_loss_running_covariance(x64):
  x, y = _views(14, 32, 8, 8)
  rng = np.random.default_rng(15)
  prev = [np.eye(8) + 0.1 * rng.normal(size=(8, 8)) for _ in range(2)]
  want, want_phis = np_soft_cca_loss(x, y, 1.0, 1e-5, prev, momentum=0.8)
  got, phis = _jit(soft_cca_loss)(x, y, running_cov=tuple(prev), momentum=0.8)
  np.testing.assert_allclose(got, want, rtol=1e-10)
  for p, q in zip(phis, want_phis):
    np.testing.assert_allclose(p, q, rtol=1e-10)


def test_barlow_twins_loss_matches_numpy(x64):
  x, y = _views(16, 32, 8, 8)
  got = _jit(barlow_twins_loss)(x, y, off_diagonal_weight=0.02)
  np.testing.assert_allclose(got, np_barlow_twins_loss(x, y, 0.02), rtol=1e-10)


def test_vicreg_loss_matches_numpy(x64):
  x, y = _views(17, 32, 8, 8)
  x = 0.3 * x                                                        # stds below 1: hinge active
  got = _jit(vicreg_loss)(x, y, invariance_weight=2.0, variance_weight=3.0, covariance_weight=0.5)
  np.testing.assert_allclose(got, np_vicreg_loss(x, y, 2.0, 3.0, 0.5), rtol=1e-10)


# ------------------------------------------------- jitted and un-jitted, vmapped over problems

VARIANT_CASES = {  # name -> (loss(x, y), its float64 reference(x, y))
    "canonical_correlations": (lambda x, y: canonical_correlations(x, y, ridge=0.0),
                               np_canonical_correlations),
    "cca_loss": (lambda x, y: cca_loss(x, y, objective="topk", k=2, ridge=0.0),
                 lambda x, y: np_cca_loss(x, y, "topk", 2)),
    "gcca_loss": (lambda x, y: gcca_loss([x, y, x * y], k=2, ridge=1e-2),
                  lambda x, y: np_gcca_loss([x, y, x * y], 2, 1e-2)),
    "soft_cca_loss": (lambda x, y: soft_cca_loss(x, y, decorrelation_weight=0.3),
                      lambda x, y: np_soft_cca_loss(x, y, 0.3)[0]),
    "barlow_twins_loss": (lambda x, y: barlow_twins_loss(x, y, off_diagonal_weight=0.02),
                          lambda x, y: np_barlow_twins_loss(x, y, 0.02)),
    "vicreg_loss": (lambda x, y: vicreg_loss(0.3 * x, y, invariance_weight=2.0, variance_weight=3.0,
                                             covariance_weight=0.5),   # stds below 1: hinge active
                    lambda x, y: np_vicreg_loss(0.3 * x, y, 2.0, 3.0, 0.5)),
}


class VariantsTest(chex.TestCase):
  """Each loss jitted and un-jitted against its float64 reference, and vmapped over a leading axis
  of problems against the loop over them."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*((name, name) for name in sorted(VARIANT_CASES)))
  def test_reference_value_and_vmap(self, name):
    ours, theirs = VARIANT_CASES[name]
    xs, ys = map(np.stack, zip(*(_views(seed, 20, 4, 4) for seed in (22, 23))))  # (2, 20, 4)
    loss_checks.value_and_vmap(self.variant, ours, theirs, xs, ys, rtol=1e-9)


# ------------------------------------------------------------------ float32, bf16, small batches

def _all_losses(x, y):
  return {
      "correlations": canonical_correlations(x, y),
      "cca_trace": cca_loss(x, y),
      "cca_topk": cca_loss(x, y, objective="topk", k=3),
      "cca_squares": cca_loss(x, y, objective="squares"),
      "gcca": gcca_loss([x, y, x[:, :3] * y[:, :3]], k=2),
      "soft_cca": soft_cca_loss(x, y),
      "barlow_twins": barlow_twins_loss(x, y),
      "vicreg": vicreg_loss(x, y),
  }


def test_float32_close_to_float64_references():
  x, y = _views(18, 32, 8, 8)
  got = jax.jit(_all_losses)(x.astype(np.float32), y.astype(np.float32))
  rho = np_canonical_correlations(x, y, 1e-4)
  want = {
      "correlations": rho, "cca_trace": -rho.sum(), "cca_topk": -rho[:3].sum(),
      "cca_squares": -(rho ** 2).sum(),
      "gcca": np_gcca_loss([x, y, x[:, :3] * y[:, :3]], 2, 1e-4),
      "soft_cca": np_soft_cca_loss(x, y)[0], "barlow_twins": np_barlow_twins_loss(x, y),
      "vicreg": np_vicreg_loss(x, y),
  }
  for name, value in got.items():
    assert value.dtype == jnp.float32, name
    np.testing.assert_allclose(value, want[name], rtol=2e-4, atol=1e-5, err_msg=name)


def test_bf16_inputs_give_finite_float32():
  x, y = (jnp.asarray(a, jnp.bfloat16) for a in _views(19, 16, 6, 6))
  for name, value in jax.jit(_all_losses)(x, y).items():
    assert value.dtype == jnp.float32 and np.all(np.isfinite(value)), name


def test_batch_smaller_than_dim_float32_is_accurate(x64):
  # float32 whitening with n < d: ridge 1e-4 makes the covariances ill-conditioned (~1e5)
  x, y = _views(21, 32, 96, 96)
  got = _jit(cca_loss)(x.astype(np.float32), y.astype(np.float32), ridge=1e-4)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_cca_loss(x, y, "trace", ridge=1e-4), rtol=1e-5)


def test_batch_smaller_than_dim_gives_finite_values_and_gradients():
  x, y = (a.astype(np.float32) for a in _views(20, 8, 32, 32))   # n = 8 < d = 32, default ridge

  def losses(x, y):
    return jnp.stack([cca_loss(x, y), cca_loss(x, y, objective="topk", k=3),
                      cca_loss(x, y, objective="squares"), gcca_loss([x, y, x + y], k=4)])

  def total(x, y):   # a NaN in any loss's gradient would show in the gradient of the sum
    values = losses(x, y)
    return jnp.sum(values), values

  (_, values), (gx, gy) = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(x, y)
  assert np.all(np.isfinite(values)) and np.all(np.isfinite(gx)) and np.all(np.isfinite(gy))


# ---------------------------------------------------------------------------------------- errors

def test_errors_name_the_bad_value():
  x, y = np.ones((8, 4)), np.ones((8, 3))
  with pytest.raises(ValueError, match="'nuclear'"):
    cca_loss(x, y, objective="nuclear")
  with pytest.raises(ValueError, match="k=4"):
    cca_loss(x, y, objective="topk", k=4)
  with pytest.raises(ValueError, match="k=None"):
    cca_loss(x, y, objective="topk")
  with pytest.raises(ValueError, match="k=2"):
    cca_loss(x, y, k=2)
  with pytest.raises(ValueError, match=r"\(8, 4\) and \(7, 3\)"):
    canonical_correlations(x, y[:7])
  with pytest.raises(ValueError, match="ridge"):
    cca_loss(x, y, ridge=-1.0)
  with pytest.raises(ValueError, match="at least 2 views, got 1"):
    gcca_loss([x], k=1)
  with pytest.raises(ValueError, match="k=8"):
    gcca_loss([x, y], k=8)
  with pytest.raises(ValueError, match=r"\(8, 4\) and \(8, 3\)"):
    vicreg_loss(x, y)
  with pytest.raises(ValueError, match="running_cov"):
    soft_cca_loss(x, x, running_cov=(np.eye(3), np.eye(3)))
