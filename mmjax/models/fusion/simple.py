"""Simple fusion of modality feature vectors: early (feature level), late (decision level),
additive, multiplicative and bilinear. xs = [x_1 (B, d_1), ..., x_M (B, d_M)] -> (B, out_dim).

  ConcatFusion          early fusion: concat, then a Dense (optionally an MLP)
  NonlinearFusion       concat, then an MLP with at least one nonlinear hidden layer
  LateFusion            decision level: a head per modality, mean (or learned weights) of the logits
  AdditiveFusion        sum_i W_i x_i + b
  MultiplicativeFusion  prod_i (W_i x_i + b_i)
  BilinearFusion        z_k = x_1^T W_k x_2 + b_k                                (two modalities)

Input checks, dtypes and the logical axis names of the params: see mmjax.models.fusion.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32
from mmjax.models.common import Dtype, MlpHead, check_modalities, logical, named_dense

WEIGHTINGS = ("mean", "learned")


class ConcatFusion(nn.Module):
  """Early (feature-level) fusion: z = W [x_1; ...; x_M] + b, (B, sum d_i) -> (B, out_dim).

  With `hidden` the Dense becomes an MLP (hidden layers with `act`, then the output Dense).
  """
  out_dim: int
  hidden: Sequence[int] = ()
  act: str = "relu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    check_modalities(xs, type(self).__name__)
    z = jnp.concatenate([jnp.asarray(x, self.dtype) for x in xs], axis=-1)      # (B, sum d_i)
    return MlpHead(self.hidden, self.out_dim, self.act, "proj", self.dtype, self.param_dtype,
                   name="head")(z)


class NonlinearFusion(nn.Module):
  """Concatenation followed by an MLP, z = MLP([x_1; ...; x_M]): the nonlinear layers after the
  concatenation let the modalities interact (a single Dense is additive in them). At least one
  hidden layer; out_dim None returns the last hidden layer,
  (B, sum d_i) -> (B, hidden[-1] or out_dim)."""
  hidden: Sequence[int]
  out_dim: int | None = None
  act: str = "relu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    if not self.hidden:
      raise ValueError(f"NonlinearFusion needs at least one hidden layer, got "
                       f"hidden={self.hidden!r}; use ConcatFusion for a linear layer")
    check_modalities(xs, type(self).__name__)
    z = jnp.concatenate([jnp.asarray(x, self.dtype) for x in xs], axis=-1)      # (B, sum d_i)
    return MlpHead(self.hidden, self.out_dim, self.act, "proj", self.dtype, self.param_dtype,
                   name="mlp")(z)


class LateFusion(nn.Module):
  """Decision-level fusion: a head per modality, then the mean of the per-modality logits,
      y = (1/M) sum_i f_i(x_i)               weighting='mean'
      y = sum_i softmax(w)_i f_i(x_i)        weighting='learned', w (M,) starts at 0 (= the mean)
  f_i = Dense (or MLP with `hidden`) to out_dim. (B, d_i) each -> (B, out_dim).
  """
  out_dim: int
  hidden: Sequence[int] = ()
  act: str = "relu"
  weighting: str = "mean"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    if self.weighting not in WEIGHTINGS:
      raise ValueError(f"unknown weighting {self.weighting!r}; expected one of {WEIGHTINGS}")
    check_modalities(xs, type(self).__name__)
    preds = jnp.stack([MlpHead(self.hidden, self.out_dim, self.act, "classes", self.dtype,
                               self.param_dtype, name=f"head_{i}")(jnp.asarray(x, self.dtype))
                       for i, x in enumerate(xs)], axis=1)                      # (B, M, out)
    if self.weighting == "mean":
      return jnp.mean(preds, axis=1)
    w = self.param("weights", logical(nn.initializers.zeros, "modality"), (len(xs),),
                   self.param_dtype)
    w = jax.nn.softmax(w.astype(at_least_float32(w))).astype(self.dtype)
    return jnp.einsum("m,bmo->bo", w, preds)                                    # (M,) . (B, M, out)


class AdditiveFusion(nn.Module):
  """z = sum_i W_i x_i + b: the sum of per-modality linear projections (one shared bias),
  (B, d_i) each -> (B, out_dim). ConcatFusion with no hidden layer, written per modality."""
  out_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    check_modalities(xs, type(self).__name__)
    dense = functools.partial(named_dense, self.out_dim, ("embed", "proj"), self.dtype,
                              self.param_dtype)
    z = sum(dense(f"proj_{i}", use_bias=False)(x) for i, x in enumerate(xs))   # (B, d_i) @ (d_i, o)
    b = self.param("bias", logical(nn.initializers.zeros, "proj"), (self.out_dim,),
                   self.param_dtype)
    return z + jnp.asarray(b, self.dtype)


class MultiplicativeFusion(nn.Module):
  """z = prod_i (W_i x_i + b_i), elementwise: (B, d_i) each -> (B, out_dim)."""
  out_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    check_modalities(xs, type(self).__name__)
    dense = functools.partial(named_dense, self.out_dim, ("embed", "proj"), self.dtype,
                              self.param_dtype)
    return math.prod(dense(f"proj_{i}")(x) for i, x in enumerate(xs))          # (B, out) each


class BilinearFusion(nn.Module):
  """Bilinear pooling of two modalities: z_k = x_1^T W_k x_2 + b_k, W (d_1, d_2, K).
  (B, d_1), (B, d_2) -> (B, out_dim). The full form of Tenenbaum & Freeman (2000) / Lin et al.
  (2015) bilinear models; LowRankFusion is its rank-r factorisation with [1; x_i] inputs."""
  out_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    check_modalities(xs, type(self).__name__, count=2)
    x1, x2 = (jnp.asarray(x, self.dtype) for x in xs)
    w = self.param("kernel", logical(nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
                                     "embed", None, "proj"),
                   (x1.shape[-1], x2.shape[-1], self.out_dim), self.param_dtype)
    b = self.param("bias", logical(nn.initializers.zeros, "proj"), (self.out_dim,),
                   self.param_dtype)
    z = jnp.einsum("bi,ijk,bj->bk", x1, jnp.asarray(w, self.dtype), x2)         # (B, d1) W (B, d2)
    return z + jnp.asarray(b, self.dtype)
