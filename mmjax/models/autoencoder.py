"""Autoencoders for two views: DCCAE (CCA plus reconstruction) and the bimodal autoencoder.

  DCCAE                 encoders f, g and decoders p, q (Wang et al. 2015); train with
                        mmjax.losses.dccae_loss
  BimodalAutoencoder    per-modality encoders, a shared layer, decoders for both modalities
                        (Ngiam et al. 2011); train with mmjax.losses.bimodal_reconstruction_loss
                        on the outputs of its `augmented` method

Encoders and decoders are mmjax.models.mlp.MlpEncoder; inputs are (n, d) feature vectors.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.common import Dtype, activation, check_modalities, logical
from mmjax.models.mlp import MlpEncoder

# present flags (x, y) of the three input conditions of the augmented training of Ngiam et al.
CONDITIONS = ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0))


class DCCAEOutput(NamedTuple):
  """What DCCAE returns: both latent codes and both reconstructions."""
  zx: jax.Array
  """(n, latent_dim) f(x)."""
  zy: jax.Array
  """(n, latent_dim) g(y)."""
  x_rec: jax.Array
  """(n, x_dim) p(f(x)), the reconstruction of x."""
  y_rec: jax.Array
  """(n, y_dim) q(g(y)), the reconstruction of y."""


class DCCAE(nn.Module):
  """Deep canonically correlated autoencoders (Wang et al. 2015, "On Deep Multi-View Representation
  Learning"): MLP encoders f, g with a linear last layer to latent_dim, and MLP decoders
  p, q back to the input sizes (hidden widths reversed unless decoder_hidden is given).

  (n, x_dim), (n, y_dim) -> DCCAEOutput; train with mmjax.losses.dccae_loss:

      out = model.apply(variables, x, y)
      loss = dccae_loss(out.zx, out.zy, x, y, out.x_rec, out.y_rec, lam)
  """
  x_dim: int
  y_dim: int
  latent_dim: int
  hidden: Sequence[int]
  decoder_hidden: Sequence[int] | None = None
  act: str = "relu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    dec = tuple(reversed(self.hidden)) if self.decoder_hidden is None else self.decoder_hidden
    mlp = lambda hidden, out, name: MlpEncoder(hidden, out, self.act, dtype=self.dtype,
                                               param_dtype=self.param_dtype, name=name)
    self.f = mlp(self.hidden, self.latent_dim, "f")
    self.g = mlp(self.hidden, self.latent_dim, "g")
    self.p = mlp(dec, self.x_dim, "p")
    self.q = mlp(dec, self.y_dim, "q")

  def encode(self, x, y):
    """(n, x_dim), (n, y_dim) -> f(x), g(y), each (n, latent_dim)."""
    return self.f(x), self.g(y)

  def __call__(self, x, y) -> DCCAEOutput:
    check_modalities([x, y], type(self).__name__, count=2)
    zx, zy = self.encode(x, y)
    return DCCAEOutput(zx, zy, self.p(zx), self.q(zy))


class BimodalOutput(NamedTuple):
  """What BimodalAutoencoder returns: the shared code and both reconstructions."""
  shared: jax.Array
  """(..., n, shared_dim) the shared representation."""
  x_rec: jax.Array
  """(..., n, x_dim) the reconstruction of x."""
  y_rec: jax.Array
  """(..., n, y_dim) the reconstruction of y."""


class BimodalAutoencoder(nn.Module):
  """Bimodal deep autoencoder (Ngiam et al. 2011, "Multimodal Deep Learning"):
      h = act(W [enc_x(x * present_x); enc_y(y * present_y)] + b)     (n, shared_dim)
      x_rec = dec_x(h),  y_rec = dec_y(h)
  enc_* are MLPs ending in their last hidden layer (with activation), dec_* mirror them (hidden
  widths reversed) with a linear output. A missing modality is fed as zeros, as in the paper's
  augmented training, which asks for both modalities back from either one alone
  (mmjax.losses.bimodal_reconstruction_loss over the outputs of `augmented`):

      out = model.apply(variables, x, y, method="augmented")
      loss = bimodal_reconstruction_loss(x, y, out.x_rec, out.y_rec)
  """
  x_dim: int
  y_dim: int
  hidden: Sequence[int]
  shared_dim: int
  act: str = "relu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if not self.hidden:
      raise ValueError("BimodalAutoencoder needs at least one hidden width per modality encoder")
    mlp = lambda hidden, out, name: MlpEncoder(hidden, out, self.act, dtype=self.dtype,
                                               param_dtype=self.param_dtype, name=name)
    self.enc_x = mlp(self.hidden, None, "enc_x")
    self.enc_y = mlp(self.hidden, None, "enc_y")
    self.shared = nn.Dense(self.shared_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                           kernel_init=logical(nn.initializers.lecun_normal(), "mlp", "embed"),
                           bias_init=logical(nn.initializers.zeros, "embed"))
    self.dec_x = mlp(tuple(reversed(self.hidden)), self.x_dim, "dec_x")
    self.dec_y = mlp(tuple(reversed(self.hidden)), self.y_dim, "dec_y")

  def encode(self, x, y, present=(1.0, 1.0)):
    """Shared representation (n, shared_dim) of x (n, x_dim) and y (n, y_dim).

    present: flags (x, y), shape (2,) for the whole batch or (n, 2) per example; a modality with
    flag 0 is replaced by zeros.
    """
    check_modalities([x, y], type(self).__name__, count=2)
    present = jnp.asarray(present, jnp.float32)
    if present.shape not in ((2,), (x.shape[0], 2)):
      raise ValueError(f"present must have shape (2,) or ({x.shape[0]}, 2), got {present.shape}")
    present = jnp.broadcast_to(present, (x.shape[0], 2))
    hx = self.enc_x(x * present[:, :1].astype(x.dtype))          # (n, hidden[-1])
    hy = self.enc_y(y * present[:, 1:].astype(y.dtype))          # (n, hidden[-1])
    return activation(self.act)(self.shared(jnp.concatenate([hx, hy], axis=-1)))

  def __call__(self, x, y, present=(1.0, 1.0)) -> BimodalOutput:
    h = self.encode(x, y, present)
    return BimodalOutput(h, self.dec_x(h), self.dec_y(h))

  def augmented(self, x, y) -> BimodalOutput:
    """Outputs for the three conditions of CONDITIONS (both, x only, y only) in one pass over a
    (3n)-row batch; every field gets a leading axis of 3: (3, n, ...)."""
    check_modalities([x, y], type(self).__name__, count=2)
    n = x.shape[0]
    present = jnp.repeat(jnp.asarray(CONDITIONS, jnp.float32), n, axis=0)   # (3n, 2)
    out = self(jnp.tile(x, (3, 1)), jnp.tile(y, (3, 1)), present)
    return BimodalOutput(*(a.reshape(3, n, *a.shape[1:]) for a in out))
