"""Tensor fusion of modality feature vectors: outer products of [1; x_i], in full or through a
low-rank (CP) weight. xs = [x_1 (B, d_1), ..., x_M (B, d_M)] -> (B, out_dim).

  tensor_fusion, TensorFusion   TFN (Zadeh et al. 2017): flattened outer product of [1; x_i], then
                                a Dense
  LowRankFusion                 LMF (Liu et al. 2018): TFN with a rank-r CP weight, never built in
                                full
  polynomial_features,          PTP (Hou et al. 2019): order-P polynomial of [1; x_1; ...; x_M],
  PolynomialFusion              CP weight

Input checks, dtypes and the logical axis names of the params: see mmjax.models.fusion.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.common import Dtype, check_modalities, logical, named_dense

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


def _with_one(x: Array) -> Array:
  """[1; x]: (B, d) -> (B, d + 1), the constant first."""
  return jnp.concatenate([jnp.ones((x.shape[0], 1), x.dtype), x], axis=-1)

def tensor_fusion(xs: Sequence[Array]) -> Array:
  """TFN's tensor fusion layer (Zadeh et al. 2017, "Tensor Fusion Network for Multimodal Sentiment
  Analysis"): the flattened outer product of the modalities each extended by a constant 1,

      z = vec([1; x_1] (x) [1; x_2] (x) ... (x) [1; x_M]),   (B, d_i) each -> (B, prod_i (d_i + 1)).

  The 1s keep every lower-order term: viewed as a (B, d_1 + 1, ..., d_M + 1) tensor T,
  T[:, 0, ..., 0] is 1, the unimodal x_1 is T[:, 1:, 0, ..., 0], the bimodal x_1 x_2^T is
  T[:, 1:, 1:, 0, ..., 0], and so on. (The paper appends the 1; putting it first, as the authors'
  code does, only permutes z.)
  """
  check_modalities(xs, "tensor_fusion", min_count=1)
  dtype = jnp.result_type(*xs)
  z = _with_one(jnp.asarray(xs[0], dtype))                                       # (B, d_1 + 1)
  for x in xs[1:]:
    x1 = _with_one(jnp.asarray(x, dtype))
    z = jnp.einsum("bi,bj->bij", z, x1).reshape(z.shape[0], -1)              # (B, P) (x) (B, d+1)
  return z


class TensorFusion(nn.Module):
  """TFN (Zadeh et al. 2017): y = W tensor_fusion(xs) + b, (B, d_i) each -> (B, out_dim), or the
  flattened tensor itself, (B, prod_i (d_i + 1)), when out_dim is None (no params then)."""
  out_dim: int | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    check_modalities(xs, type(self).__name__)
    z = tensor_fusion([jnp.asarray(x, self.dtype) for x in xs])                 # (B, prod(d_i + 1))
    if self.out_dim is None:
      return z
    return named_dense(self.out_dim, ("embed", "proj"), self.dtype, self.param_dtype, "out")(z)


class LowRankFusion(nn.Module):
  """LMF (Liu et al. 2018, "Efficient Low-rank Multimodal Fusion with Modality-Specific Factors"):

      y = sum_{k=1}^{r} w_k prod_{i=1}^{M} ([1; x_i]^T W_i^{(k)}) + b,   W_i^{(k)} (d_i + 1, out)

  which equals TensorFusion's linear layer with the CP weight W = sum_k w_k W_1^{(k)} (x) ... (x)
  W_M^{(k)} (one rank-r tensor per output unit) without ever forming the prod(d_i + 1)-sized tensor.
  The factors 'factor_i' (r, d_i + 1, out), the fusion weights w (r,) and the bias b (out,) are all
  params: a port that keeps the factors in a plain Python list (e.g. MultiBench's
  LowRankTensorFusion) leaves them out of the optimiser, so they never train.
  """
  out_dim: int
  rank: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    check_modalities(xs, type(self).__name__)
    factor_init = logical(nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=0),
                          None, "embed", "proj")
    fused = None
    for i, x in enumerate(xs):
      f = self.param(f"factor_{i}", factor_init, (self.rank, x.shape[-1] + 1, self.out_dim),
                     self.param_dtype)
      y = jnp.einsum("bd,rdo->bro", _with_one(jnp.asarray(x, self.dtype)),
                     jnp.asarray(f, self.dtype))                           # (B, d+1) @ (r, d+1, o)
      fused = y if fused is None else fused * y                                 # (B, r, out)
    w = self.param("fusion_weights", logical(nn.initializers.normal(self.rank ** -0.5), None),
                   (self.rank,), self.param_dtype)
    b = self.param("fusion_bias", logical(nn.initializers.zeros, "proj"), (self.out_dim,),
                   self.param_dtype)
    return jnp.einsum("r,bro->bo", jnp.asarray(w, self.dtype), fused) + jnp.asarray(b, self.dtype)


def polynomial_features(xs: Sequence[Array], order: int) -> Array:
  """PTP's polynomial tensor, flattened: vec(f (x) f (x) ... (x) f) with f = [1; x_1; ...; x_M]
  (order copies): (B, d_i) each -> (B, (1 + sum d_i) ** order). Every monomial of degree <= order in
  the features appears (thanks to the 1). Memory grows as D ** order: a reference, not a layer."""
  check_modalities(xs, "polynomial_features", min_count=1)
  dtype = jnp.result_type(*xs)
  f = _with_one(jnp.concatenate([jnp.asarray(x, dtype) for x in xs], axis=-1))  # (B, D)
  z = f
  for _ in range(order - 1):
    z = jnp.einsum("bi,bj->bij", z, f).reshape(f.shape[0], -1)
  return z


class PolynomialFusion(nn.Module):
  """Polynomial tensor pooling, PTP (Hou et al. 2019, "Deep Multimodal Multilinear Fusion with
  High-order Polynomial Pooling"): with f = [1; x_1; ...; x_M] (D = 1 + sum d_i) and P = order,

      y_o = <W_o, f (x) ... (x) f> + b_o,   W_o = sum_{k=1}^{r} w_k u_{k,o} (x) ... (x) u_{k,o}
          = sum_k w_k (f^T U_k)_o ** P + b_o,                              U (r, D, out), w (r,)

  a symmetric CP weight (the same factor on every mode, as in the authors' HPFN code; the pooled
  tensor is symmetric, so only the symmetric part of any weight matters). Unlike TFN/LMF it mixes
  features within a modality too, up to degree P. The paper's hierarchical network (HPFN, PTP over
  time/modality windows) and its optional power/L2 normalisations are left out; the constant is 1
  (the code uses 0.5). (B, d_i) each -> (B, out_dim).
  """
  out_dim: int
  rank: int
  order: int = 2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    if self.order < 1:
      raise ValueError(f"PolynomialFusion order must be >= 1, got {self.order}")
    check_modalities(xs, type(self).__name__)
    f = _with_one(jnp.concatenate([jnp.asarray(x, self.dtype) for x in xs], axis=-1))  # (B, D)
    u = self.param("factor", logical(nn.initializers.lecun_normal(in_axis=1, out_axis=2,
                                                                   batch_axis=0),
                                     None, "embed", "proj"),
                   (self.rank, f.shape[-1], self.out_dim), self.param_dtype)
    w = self.param("fusion_weights", logical(nn.initializers.normal(self.rank ** -0.5), None),
                   (self.rank,), self.param_dtype)
    b = self.param("fusion_bias", logical(nn.initializers.zeros, "proj"), (self.out_dim,),
                   self.param_dtype)
    y = jnp.einsum("bd,rdo->bro", f, jnp.asarray(u, self.dtype)) ** self.order  # (B, r, out)
    return jnp.einsum("r,bro->bo", jnp.asarray(w, self.dtype), y) + jnp.asarray(b, self.dtype)
