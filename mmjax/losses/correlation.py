"""Correlation objectives: Deep CCA and its relatives.

  canonical_correlations  the canonical correlations of two views (Hotelling 1936)
  cca_loss                Deep CCA (Andrew et al. 2013): trace norm, top-k sum or sum of squares
  gcca_loss               Deep Generalized CCA for two or more views (Benton et al. 2017)
  soft_cca_loss           Soft CCA: L2 distance plus stochastic decorrelation (Chang et al. 2018)
  barlow_twins_loss       cross-correlation towards the identity (Zbontar et al. 2021)
  vicreg_loss             variance-invariance-covariance regularisation (Bardes et al. 2022)

Every view is a (n, d) batch; row i of every view belongs to the same example. Statistics are taken
over the batch. Whatever the input dtype, everything is computed in float32 (float64 when an input
is float64) with matmuls at Precision.HIGHEST: the default precision of accelerators rounds float32
matmul inputs to bf16 (TPU) or tf32 (GPU), which spoils whitening.

CCA whitens with Cholesky factors and triangular solves and takes singular values with
svd(compute_uv=False), never eigh: the derivative of a singular value needs no eigenvector gaps, so
the gradient stays exact at repeated eigenvalues (e.g. an already-whitened view), and with a ridge
the Cholesky factors exist when the batch is smaller than the dimension.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from mmjax._dtypes import at_least_float32
from mmjax.losses._utils import check_views

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""

_HIGHEST = jax.lax.Precision.HIGHEST
_CCA_OBJECTIVES = ("trace", "topk", "squares")


def _check_views(views: Sequence[Array], names: Sequence[str]) -> None:
  check_views(views, names)
  if views[0].shape[0] < 2:
    raise ValueError(f"batch size must be at least 2 to estimate covariances, got shape "
                     f"{views[0].shape} for {names[0]}")


def _check_same_shape(x: Array, y: Array, names: tuple[str, str]) -> None:
  _check_views((x, y), names)
  if x.shape != y.shape:
    raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {x.shape} and "
                     f"{y.shape}")


def _check_ridge(ridge) -> None:
  if isinstance(ridge, (int, float)) and ridge < 0:
    raise ValueError(f"ridge must be >= 0, got {ridge}")


def _centre(x: Array, dtype) -> Array:
  x = x.astype(dtype)
  return x - jnp.mean(x, axis=0, keepdims=True)


def _tmatmul(a: Array, b: Array) -> Array:
  """a^T b at full precision: (n, p), (n, q) -> (p, q)."""
  return jnp.matmul(a.T, b, precision=_HIGHEST)


def _cholesky_cov(xc: Array, ridge) -> Array:
  """Lower Cholesky factor of xc^T xc / (n - 1) + ridge I: (n, d) -> (d, d)."""
  n, d = xc.shape
  return jnp.linalg.cholesky(_tmatmul(xc, xc) / (n - 1) + ridge * jnp.eye(d, dtype=xc.dtype))


def _whitened_cross_cov(x: Array, y: Array, ridge) -> Array:
  """T = Lx^{-1} Sxy Ly^{-T} = (Lx^{-1} Xc^T) (Ly^{-1} Yc^T)^T / (n-1): (n, dx), (n, dy) -> (dx, dy).

  Whitening the centred views before the product, rather than Sxy after it, keeps float32 accurate
  when n < d (measured: 1e-6 instead of 1% relative error at n=64, d=256, ridge=1e-4).
  """
  dtype = at_least_float32(x, y)
  xc, yc = _centre(x, dtype), _centre(y, dtype)
  wx = solve_triangular(_cholesky_cov(xc, ridge), xc.T, lower=True)   # Lx^{-1} Xc^T: (dx, n)
  wy = solve_triangular(_cholesky_cov(yc, ridge), yc.T, lower=True)   # Ly^{-1} Yc^T: (dy, n)
  return jnp.matmul(wx, wy.T, precision=_HIGHEST) / (xc.shape[0] - 1)  # (dx, n) @ (n, dy)


def canonical_correlations(x: Array, y: Array, *, ridge: float = 1e-4) -> Array:
  """Canonical correlations of two views (Hotelling 1936, "Relations Between Two Sets of Variates").

  With centred views and covariances over the batch,
      Sxx = Xc^T Xc / (n-1) + ridge I,  Syy = Yc^T Yc / (n-1) + ridge I,  Sxy = Xc^T Yc / (n-1),
  Sxx = Lx Lx^T and Syy = Ly Ly^T (Cholesky), the canonical correlations are the singular values of
      T = Lx^{-1} Sxy Ly^{-T},
  equivalently the non-negative solutions rho of [[0, Sxy], [Syx, 0]] v = rho diag(Sxx, Syy) v.
  The ridge keeps Sxx and Syy positive definite; it is needed when n <= d (then, with ridge 0, the
  factors do not exist and the result is NaN) and shrinks the correlations slightly below the exact
  ones.

  Args:
    x: (n, dx) first view.  y: (n, dy) second view, row i paired with row i of x.
    ridge: added to the diagonal of each view's covariance.

  Returns:
    (min(dx, dy),) canonical correlations in [0, 1], in descending order.
  """
  _check_views((x, y), ("x", "y"))
  _check_ridge(ridge)
  return jnp.linalg.svd(_whitened_cross_cov(x, y, ridge), compute_uv=False)


def cca_loss(x: Array, y: Array, *, objective: str = "trace", k: int | None = None,
             ridge: float = 1e-4) -> Array:
  """Negative total canonical correlation, the Deep CCA objective (Andrew et al. 2013, "Deep
  Canonical Correlation Analysis").

  With T = Lx^{-1} Sxy Ly^{-T} and its singular values rho_1 >= rho_2 >= ... (see
  canonical_correlations):
      objective="trace":   loss = -sum_i rho_i = -||T||_*   (trace norm; the paper's o = k case)
      objective="topk":    loss = -sum_{i<=k} rho_i         (the paper's k < o case)
      objective="squares": loss = -sum_i rho_i^2 = -||T||_F^2 = -tr(Sxx^{-1} Sxy Syy^{-1} Syx)
                           (no SVD; smooth everywhere)

  Args:
    x: (n, dx) first view.  y: (n, dy) second view.
    objective: "trace", "topk" or "squares".
    k: number of correlations summed by objective="topk", 1 <= k <= min(dx, dy); only for "topk".
    ridge: added to the diagonal of each view's covariance (needed when n <= d).

  Returns:
    scalar loss, in [-min(dx, dy), 0].
  """
  _check_views((x, y), ("x", "y"))
  _check_ridge(ridge)
  if objective not in _CCA_OBJECTIVES:
    raise ValueError(f"objective must be one of {_CCA_OBJECTIVES}, got {objective!r}")
  kmax = min(x.shape[1], y.shape[1])
  if objective == "topk":
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= kmax:
      raise ValueError(f"objective='topk' needs an int k with 1 <= k <= min(dx, dy) = {kmax} "
                       f"(x {x.shape}, y {y.shape}), got k={k!r}")
  elif k is not None:
    raise ValueError(f"k is only used by objective='topk', got k={k!r} with "
                     f"objective={objective!r}")
  t = _whitened_cross_cov(x, y, ridge)                     # (dx, dy)
  if objective == "squares":
    return -jnp.sum(t * t)
  rho = jnp.linalg.svd(t, compute_uv=False)                # (min(dx, dy),) descending
  return -jnp.sum(rho[:k] if objective == "topk" else rho)


def gcca_loss(views: Sequence[Array], *, k: int, ridge: float = 1e-4) -> Array:
  """Negative GCCA objective for two or more views (Benton et al. 2017, "Deep Generalized Canonical
  Correlation Analysis"; Horst 1961 for linear GCCA).

  With centred views X_j (n, d_j), covariances C_j = X_j^T X_j / (n-1) + ridge I = L_j L_j^T and
      P_j = X_j (X_j^T X_j + (n-1) ridge I)^{-1} X_j^T = Q_j Q_j^T,  Q_j = X_j L_j^{-T} / sqrt(n-1),
      M = sum_j P_j = Q Q^T,  Q = [Q_1, ..., Q_J]  (n, sum_j d_j),
  the loss is minus the sum of the k largest eigenvalues of M, computed as the k largest squared
  singular values of Q (no eigh). The ridge is relative to the covariance, as in cca_loss.

  Equivalence with the reconstruction form of the paper: for G (n, k) with G^T G = I, the ridge
  regression U_j = (X_j^T X_j + (n-1) ridge I)^{-1} X_j^T G minimises
  ||G - X_j U_j||_F^2 + (n-1) ridge ||U_j||_F^2, at the value k - tr(G^T P_j G); minimising over G
      min_G sum_j [...] = k J - sum_{i<=k} eig_i(M) = k J + loss,
  reached at G = the top-k eigenvectors of M. So the loss differs from the reconstruction objective
  by the constant kJ and has the same gradients. With two views and ridge 0,
  -loss = k + sum_{i<=k} rho_i (the canonical correlations) for k <= min(d_1, d_2).

  Args:
    views: J >= 2 arrays (n, d_j) with the same batch size n.
    k: number of eigenvalues summed, 1 <= k <= min(n, sum_j d_j).
    ridge: added to the diagonal of each view's covariance (needed when n <= d_j).

  Returns:
    scalar loss, in [-k J, 0].
  """
  views = list(views)
  if len(views) < 2:
    raise ValueError(f"gcca_loss needs at least 2 views, got {len(views)}")
  _check_views(views, [f"views[{j}]" for j in range(len(views))])
  _check_ridge(ridge)
  n = views[0].shape[0]
  kmax = min(n, sum(v.shape[1] for v in views))
  if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= kmax:
    raise ValueError(f"k must be an int with 1 <= k <= min(n, sum of view dims) = {kmax} (view "
                     f"shapes {[v.shape for v in views]}), got k={k!r}")
  dtype = at_least_float32(*views)
  qs = []
  for v in views:
    vc = _centre(v, dtype)                                 # (n, d_j)
    qs.append(solve_triangular(_cholesky_cov(vc, ridge), vc.T, lower=True).T)  # X_j L_j^{-T}
  q = jnp.concatenate(qs, axis=1) / jnp.sqrt(jnp.asarray(n - 1, dtype))        # (n, sum_j d_j)
  s = jnp.linalg.svd(q, compute_uv=False)                  # singular values, descending
  return -jnp.sum(s[:k] ** 2)


def _batch_norm(x: Array, eps) -> Array:
  """Standardise each column over the batch (biased variance, as BatchNorm): (n, d) -> (n, d)."""
  xc = _centre(x, at_least_float32(x))
  return xc / jnp.sqrt(jnp.mean(xc * xc, axis=0, keepdims=True) + eps)


def _off_diagonal(c: Array) -> Array:
  """c with its diagonal set to zero: (d, d) -> (d, d)."""
  return jnp.where(jnp.eye(c.shape[0], dtype=bool), 0, c)


def soft_cca_loss(x: Array, y: Array, *, decorrelation_weight: float = 1.0,
                  running_cov: tuple[Array, Array] | None = None, momentum: float = 0.9,
                  eps: float = 1e-5):
  """Soft CCA (Chang et al. 2018, "Scalable and Effective Deep CCA via Soft Decorrelation").

  Each view is batch-normalised without affine parameters, z = (x - mean) / sqrt(var + eps), and
      L_dist = 1/n sum_i ||zx_i - zy_i||^2                 (L2 distance, averaged over the batch)
      C      = z^T z / n                                  (d, d) minibatch covariance of one view
      L_SDL  = sum_{a != b} |Phi_ab|                       (stochastic decorrelation loss)
      loss   = L_dist + decorrelation_weight * (L_SDL(Phi_x) + L_SDL(Phi_y)).
  By default Phi = C, the minibatch covariance. With running_cov = (Phi_x, Phi_y) from the previous
  step, Phi = momentum * stop_gradient(Phi_prev) + (1 - momentum) * C, the running estimate of the
  paper (its bias-corrected average Phi_t / c_t tends to this one); the caller keeps that state,
  starting e.g. from identity matrices, and gets the updated one back.

  Args:
    x, y: (n, d) the two views, row i of each belongs to the same example.
    decorrelation_weight: lambda, the weight of the decorrelation terms.
    running_cov: None, or (Phi_x, Phi_y), two (d, d) running covariance estimates.
    momentum: weight of the previous estimate, used with running_cov.
    eps: added to the batch variance when normalising.

  Returns:
    the scalar loss; with running_cov, (loss, (Phi_x, Phi_y)) with the updated estimates (gradients
    stopped), e.g. for jax.value_and_grad(..., has_aux=True).
  """
  _check_same_shape(x, y, ("x", "y"))
  n, d = x.shape
  if running_cov is not None and (len(running_cov) != 2
                                  or any(jnp.shape(p) != (d, d) for p in running_cov)):
    raise ValueError(f"running_cov must be a pair of ({d}, {d}) arrays, got shapes "
                     f"{[jnp.shape(p) for p in running_cov]}")
  zx, zy = _batch_norm(x, eps), _batch_norm(y, eps)        # (n, d) each
  dist = jnp.sum((zx - zy) ** 2) / n
  phis = (_tmatmul(zx, zx) / n, _tmatmul(zy, zy) / n)      # (d, n) @ (n, d) -> (d, d)
  if running_cov is not None:
    phis = tuple(momentum * jax.lax.stop_gradient(jnp.asarray(p, c.dtype)) + (1 - momentum) * c
                 for p, c in zip(running_cov, phis))
  sdl = sum(jnp.sum(jnp.abs(_off_diagonal(p))) for p in phis)
  loss = dist + decorrelation_weight * sdl
  if running_cov is None:
    return loss
  return loss, tuple(jax.lax.stop_gradient(p) for p in phis)


def barlow_twins_loss(za: Array, zb: Array, *, off_diagonal_weight: float = 5e-3,
                      eps: float = 1e-5) -> Array:
  """Barlow Twins redundancy reduction (Zbontar et al. 2021, "Barlow Twins: Self-Supervised
  Learning via Redundancy Reduction").

  Each dimension is standardised over the batch (biased variance plus eps, as BatchNorm), then
      C = za^T zb / n                                        (d, d) cross-correlation
      loss = sum_i (1 - C_ii)^2 + off_diagonal_weight * sum_{i != j} C_ij^2.

  Args:
    za, zb: (n, d) embeddings of two views of the same n examples.
    off_diagonal_weight: lambda (5e-3 in the paper).
    eps: added to the batch variance.

  Returns:
    scalar loss.
  """
  _check_same_shape(za, zb, ("za", "zb"))
  n = za.shape[0]
  c = _tmatmul(_batch_norm(za, eps), _batch_norm(zb, eps)) / n   # (d, n) @ (n, d) -> (d, d)
  return (jnp.sum((1 - jnp.diagonal(c)) ** 2)
          + off_diagonal_weight * jnp.sum(_off_diagonal(c) ** 2))


def vicreg_loss(za: Array, zb: Array, *, invariance_weight: float = 25.0,
                variance_weight: float = 25.0, covariance_weight: float = 1.0,
                eps: float = 1e-4) -> Array:
  """VICReg (Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance Regularization for
  Self-Supervised Learning"), as in the official implementation.

      s(za, zb) = 1/(n d) sum_i ||za_i - zb_i||^2                      (invariance, the MSE)
      v(z)      = 1/d sum_j max(0, 1 - sqrt(Var(z_j) + eps))          (variance hinge, gamma = 1)
      c(z)      = 1/d sum_{i != j} Cov(z)_ij^2                         (covariance)
      loss = invariance_weight * s + variance_weight * (v(za) + v(zb)) / 2
             + covariance_weight * (c(za) + c(zb))
  with Var and Cov over the batch with 1/(n-1). The 1/2 on the variance term follows the official
  code (the paper's equation writes v(za) + v(zb)); the default weights were tuned with it.

  Args:
    za, zb: (n, d) embeddings of two views of the same n examples.
    invariance_weight, variance_weight, covariance_weight: lambda, mu, nu (25, 25, 1 in the paper).
    eps: added to the variance inside the square root.

  Returns:
    scalar loss.
  """
  _check_same_shape(za, zb, ("za", "zb"))
  n, d = za.shape
  dtype = at_least_float32(za, zb)
  invariance = jnp.mean((za.astype(dtype) - zb.astype(dtype)) ** 2)

  def variance_and_covariance(z):
    zc = _centre(z, dtype)
    cov = _tmatmul(zc, zc) / (n - 1)                       # (d, n) @ (n, d) -> (d, d)
    std = jnp.sqrt(jnp.diagonal(cov) + eps)
    return jnp.mean(jax.nn.relu(1 - std)), jnp.sum(_off_diagonal(cov) ** 2) / d

  va, ca = variance_and_covariance(za)
  vb, cb = variance_and_covariance(zb)
  return (invariance_weight * invariance + variance_weight * (va + vb) / 2
          + covariance_weight * (ca + cb))
