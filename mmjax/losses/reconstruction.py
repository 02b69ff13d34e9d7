"""Reconstruction objectives of the two-view autoencoders in mmjax.models.autoencoder.

  dccae_loss                    cca_loss(f(x), g(y)) + lam * reconstruction errors / n (DCCAE,
                                Wang et al. 2015)
  bimodal_reconstruction_loss   reconstruction of both modalities, averaged over the three input
                                conditions (both, x only, y only) of Ngiam et al. 2011

Pure functions of arrays: pass the fields of DCCAEOutput / BimodalOutput. Inputs are (n, d) feature
vectors; the loss is computed in float32 (float64 under x64), whatever the compute dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax._dtypes import upcast
from mmjax.losses._utils import check_views
from mmjax.losses.correlation import cca_loss

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


def _sq_error(a: Array, b: Array) -> Array:
  """sum of (a - b)^2 over all entries, in float32 (float64 under x64); a, b broadcast -> ()."""
  a, b = upcast(a, b)
  return jnp.sum((a - b) ** 2)


def dccae_loss(zx: Array, zy: Array, x: Array, y: Array, x_rec: Array, y_rec: Array, lam: float,
               *, objective: str = "trace", k: int | None = None, ridge: float = 1e-4) -> Array:
  """The DCCAE objective (Wang et al. 2015, "On Deep Multi-View Representation Learning"), with the
  CCA term as in cca_loss:

      loss = cca_loss(f(x), g(y)) + lam / n * sum_i (||x_i - p(f(x_i))||^2 + ||y_i - q(g(y_i))||^2)

  Args:
    zx: (n, latent) f(x) and zy: (n, latent) g(y), the latent codes (DCCAEOutput.zx, .zy).
    x: (n, x_dim) and y: (n, y_dim), the inputs the model was applied to.
    x_rec: (n, x_dim) p(f(x)) and y_rec: (n, y_dim) q(g(y)), the reconstructions.
    lam: lambda, the weight of the reconstruction errors (lam = 0 is Deep CCA).
    objective, k, ridge: passed to cca_loss.

  Returns:
    scalar loss.
  """
  check_views((x, y), ("x", "y"))
  if x_rec.shape != x.shape or y_rec.shape != y.shape:
    raise ValueError(f"reconstructions {x_rec.shape}, {y_rec.shape} do not match the inputs "
                     f"{x.shape}, {y.shape}")
  cca = cca_loss(zx, zy, objective=objective, k=k, ridge=ridge)
  rec = (_sq_error(x, x_rec) + _sq_error(y, y_rec)) / x.shape[0]
  return cca + lam * rec


def bimodal_reconstruction_loss(x: Array, y: Array, x_rec: Array, y_rec: Array) -> Array:
  """Reconstruction error of both modalities averaged over the three input conditions (Ngiam et al.
  2011, "Multimodal Deep Learning": one third of the examples keep only x, one third only y, both
  are reconstructed):

      loss = 1/3 sum_c 1/n sum_i (||x_i - x_rec[c, i]||^2 + ||y_i - y_rec[c, i]||^2),
  c in (both, x only, y only).

  Args:
    x: (n, x_dim) and y: (n, y_dim), the complete inputs (the targets).
    x_rec: (3, n, x_dim) and y_rec: (3, n, y_dim), the reconstructions under the three conditions
      (the fields of BimodalAutoencoder.augmented(x, y)).

  Returns:
    scalar loss.
  """
  check_views((x, y), ("x", "y"))
  if x_rec.shape != (3, *x.shape) or y_rec.shape != (3, *y.shape):
    raise ValueError(f"expected reconstructions of shapes {(3, *x.shape)} and {(3, *y.shape)} "
                     f"(BimodalAutoencoder.augmented), got {x_rec.shape} and {y_rec.shape}")
  errors = _sq_error(x[None], x_rec) + _sq_error(y[None], y_rec)
  return errors / (3 * x.shape[0])
