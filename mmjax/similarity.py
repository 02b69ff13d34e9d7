"""Pairwise similarities, distances, kernels and centred kernel alignment.

  l2_normalize(x)                             x / ||x|| over the last axis
  squared_distances(x, y)                     ||x_i - y_j||^2, batched over leading axes
  dot_similarity(x, y)                        x_i . y_j
  cosine_similarity(x, y)                     x_i . y_j / (||x_i|| ||y_j||)
  rbf_kernel(x, y, gamma=None)                exp(-gamma ||x_i - y_j||^2), gamma = 1/d by default
  polynomial_kernel(x, y, degree, gamma, coef0)  (gamma x_i . y_j + coef0)^degree
  cka(kx, ky)                                 centred kernel alignment of two Gram matrices
  linear_cka(x, y)                            CKA with linear kernels, from the features
  rbf_cka(x, y, threshold=1.0)                CKA with RBF kernels, median-distance bandwidth

The kernels take (n, d) and (m, d) and return (n, m), with sklearn.metrics.pairwise's conventions.
CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited") compares two
representations (n, dx) and (n, dy) of the same n examples; dx and dy may differ. Everything is
computed in float32 (float64 when an input is float64) with matmuls at Precision.HIGHEST.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax._dtypes import upcast

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""

_HIGHEST = jax.lax.Precision.HIGHEST

__all__ = ["l2_normalize", "squared_distances", "dot_similarity", "cosine_similarity",
           "rbf_kernel", "polynomial_kernel", "cka", "linear_cka", "rbf_cka"]


def l2_normalize(x: Array, eps: float = 1e-6) -> Array:
  """x / max(||x||_2, eps) over the last axis, in float32 (float64 stays float64).

  (..., D) -> (..., D); a row of norm below eps is scaled by 1/eps instead (no NaN at 0).
  """
  x = upcast(x)[0]
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps ** 2))


def squared_distances(x: Array, y: Array) -> Array:
  """Pairwise squared Euclidean distances, batched over any leading axes:

      C_ij = ||x_i - y_j||^2 = ||x_i||^2 + ||y_j||^2 - 2 x_i . y_j,   clipped at 0,
  after centring both sets on the mean of y (distances do not change; the norms, and so the
  cancellation in the difference, stay small for data far from the origin). The matmul runs at
  Precision.HIGHEST, so memory is O(n m), never O(n m d).

  Args:
    x: (..., n, d); y: (..., m, d) with the same d (leading axes broadcast). Two 1-D sequences
      (n,) and (m,) are read as d = 1.

  Returns:
    (..., n, m) in float32 (float64 when an input is float64).
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.ndim == 1 and y.ndim == 1:
    x, y = x[:, None], y[:, None]
  if x.ndim < 2 or y.ndim < 2 or x.shape[-1] != y.shape[-1]:
    raise ValueError(f"squared_distances expects x (..., n, d) and y (..., m, d) with the same d, "
                     f"got shapes {x.shape} and {y.shape}")
  x, y = upcast(x, y)
  centre = jnp.mean(y, axis=-2, keepdims=True)                      # (..., 1, d)
  x, y = x - centre, y - centre
  cross = jnp.matmul(x, jnp.swapaxes(y, -1, -2), precision=_HIGHEST)  # (..., n, d) @ (..., d, m)
  sq = jnp.sum(x * x, axis=-1)[..., :, None] + jnp.sum(y * y, axis=-1)[..., None, :] - 2 * cross
  return jnp.maximum(sq, 0)


def _pair(x: Array, y: Array) -> tuple[Array, Array]:
  """Checks (n, d) and (m, d) and upcasts them."""
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"x and y must be (n, d) and (m, d) arrays with the same feature dim d, got "
                     f"shapes {x.shape} and {y.shape}")
  return tuple(upcast(x, y))


def _dot(x: Array, y: Array) -> Array:
  return jnp.matmul(x, y.T, precision=_HIGHEST)            # (n, d) @ (d, m) -> (n, m)


def dot_similarity(x: Array, y: Array) -> Array:
  """Dot products x_i . y_j: (n, d), (m, d) -> (n, m)."""
  x, y = _pair(x, y)
  return _dot(x, y)


def cosine_similarity(x: Array, y: Array, *, eps: float = 1e-12) -> Array:
  """Cosine similarities x_i . y_j / (||x_i|| ||y_j||): (n, d), (m, d) -> (n, m).

  Norms below eps count as eps, so a zero row has similarity 0 with everything (as sklearn).
  """
  x, y = _pair(x, y)
  return _dot(l2_normalize(x, eps), l2_normalize(y, eps))


def rbf_kernel(x: Array, y: Array, gamma: float | None = None) -> Array:
  """Gaussian kernel exp(-gamma ||x_i - y_j||^2): (n, d), (m, d) -> (n, m); gamma = 1/d if None."""
  x, y = _pair(x, y)
  gamma = 1.0 / x.shape[1] if gamma is None else gamma
  return jnp.exp(-gamma * squared_distances(x, y))


def polynomial_kernel(x: Array, y: Array, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> Array:
  """Polynomial kernel (gamma x_i . y_j + coef0)^degree: (n, d), (m, d) -> (n, m).

  gamma = 1/d if None (sklearn's convention).
  """
  x, y = _pair(x, y)
  gamma = 1.0 / x.shape[1] if gamma is None else gamma
  return (gamma * _dot(x, y) + coef0) ** degree


def _centre_gram(k: Array) -> Array:
  """H K H with H = I - 11^T/n: (n, n) -> (n, n)."""
  k = k - jnp.mean(k, axis=0, keepdims=True)
  return k - jnp.mean(k, axis=1, keepdims=True)


def cka(kx: Array, ky: Array) -> Array:
  """Centred kernel alignment of two Gram matrices over the same n examples (Kornblith et al. 2019;
  Cortes et al. 2012).

      HSIC(K, L) = tr(K H L H) / (n-1)^2,   H = I - 11^T / n
      CKA(K, L)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
  computed as <HKH, HLH>_F / (||HKH||_F ||HLH||_F) (the (n-1)^2 cancels).

  Args:
    kx, ky: (n, n) Gram matrices, e.g. rbf_kernel(x, x) and rbf_kernel(y, y).

  Returns:
    scalar in [0, 1] for positive semi-definite kernels; 1 when kx and ky agree up to a scale.
  """
  if kx.ndim != 2 or kx.shape[0] != kx.shape[1] or kx.shape != ky.shape:
    raise ValueError(f"kx and ky must be square (n, n) Gram matrices of the same n, got shapes "
                     f"{kx.shape} and {ky.shape}")
  kx, ky = (_centre_gram(k) for k in upcast(kx, ky))
  return jnp.sum(kx * ky) / (jnp.linalg.norm(kx) * jnp.linalg.norm(ky))


def _features(x: Array, y: Array) -> tuple[Array, Array]:
  """Checks (n, dx) and (n, dy) and upcasts them."""
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"x and y must be (n, dx) and (n, dy) representations of the same n examples, "
                     f"got shapes {x.shape} and {y.shape}")
  return tuple(upcast(x, y))


def linear_cka(x: Array, y: Array) -> Array:
  """CKA with linear kernels, cka(x x^T, y y^T), from the features (Kornblith et al. 2019, eq. 5):

      ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),   Xc, Yc centred over the n examples.

  Args:
    x: (n, dx) and y: (n, dy) representations of the same n examples.

  Returns:
    scalar in [0, 1]; invariant to orthogonal transforms and isotropic scaling of either input.
  """
  x, y = _features(x, y)
  x, y = x - jnp.mean(x, axis=0), y - jnp.mean(y, axis=0)
  def gram_norm(a, b):
    return jnp.linalg.norm(jnp.matmul(a.T, b, precision=_HIGHEST))  # (d, n) @ (n, d') -> (d, d')
  return gram_norm(y, x) ** 2 / (gram_norm(x, x) * gram_norm(y, y))


def rbf_cka(x: Array, y: Array, *, threshold: float = 1.0) -> Array:
  """CKA with RBF kernels whose bandwidth follows Kornblith et al. 2019:

      K_ij = exp(-||x_i - x_j||^2 / (2 threshold^2 median(D))),
  with median(D) the median of all n^2 squared distances (zeros on the diagonal included),
  computed separately for x and y; then cka(K, L).

  Args:
    x: (n, dx) and y: (n, dy) representations of the same n examples.
    threshold: bandwidth as a fraction of the median distance.

  Returns:
    scalar in [0, 1]; invariant to orthogonal transforms and isotropic scaling of either input.
  """
  x, y = _features(x, y)
  def gram(z):
    sq = squared_distances(z, z)                           # (n, n)
    return jnp.exp(-sq / (2 * threshold ** 2 * jnp.median(sq)))
  return cka(gram(x), gram(y))
