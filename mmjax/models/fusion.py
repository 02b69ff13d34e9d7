"""Fusion of modality feature vectors: xs = [x_1 (B, d_1), ..., x_M (B, d_M)] -> one representation.

  ConcatFusion          early fusion: concat, then a Dense (optionally an MLP)
  NonlinearFusion       concat, then an MLP with at least one nonlinear hidden layer
  LateFusion            decision level: a head per modality, mean (or learned weights) of the logits
  AdditiveFusion        sum_i W_i x_i + b
  MultiplicativeFusion  prod_i (W_i x_i + b_i)
  BilinearFusion        z_k = x_1^T W_k x_2 + b_k                                (two modalities)
  TensorFusion          TFN (Zadeh et al. 2017): flattened outer product of [1; x_i], then a Dense
  LowRankFusion         LMF (Liu et al. 2018): TFN with a rank-r CP weight, never built in full
  PolynomialFusion      PTP (Hou et al. 2019): order-P polynomial of [1; x_1; ...; x_M], CP weight
  GatedFusion           GMU (Arevalo et al. 2017): gated sum of tanh projections; returns (h, gates)
  ModalityShift (MAG)   Rahman et al. 2020: a primary embedding shifted by gated other modalities
  FiLM, film            Perez et al. 2018: gamma(c) * x + beta(c)

Every module checks its inputs (a list or tuple of (batch, features) arrays with one batch size) and
raises ValueError naming the bad value. Compute runs in `dtype` (bf16 on accelerators), params are
`param_dtype` (fp32), and every parameter carries logical axis names (mmjax.parallel.LOGICAL_RULES):
'embed' for input widths, 'mlp' for hidden widths, 'proj' for fused outputs, 'classes' for
LateFusion logits, 'modality' for per-modality axes and None for CP ranks (replicated).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.transformer import Dtype, LayerNorm, activation, logical

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""
GATES = ("sigmoid", "softmax")
WEIGHTINGS = ("mean", "learned")


def check_modalities(xs, where: str, *, min_count: int = 2, count: int | None = None) -> None:
  """Raises ValueError unless xs is a list/tuple of (B, d_i) arrays with one B, enough of them."""
  if not isinstance(xs, (list, tuple)):
    raise ValueError(f"{where} expects a list or tuple of modality arrays [(B, d_1), ..., "
                     f"(B, d_M)], got {type(xs).__name__} of shape {getattr(xs, 'shape', None)}")
  if count is not None and len(xs) != count:
    raise ValueError(f"{where} fuses exactly {count} modalities, got {len(xs)}")
  if len(xs) < min_count:
    raise ValueError(f"{where} needs at least {min_count} modalities, got {len(xs)}")
  for i, x in enumerate(xs):
    if jnp.ndim(x) != 2:
      raise ValueError(f"{where}: modality {i} must be a (batch, features) array, got shape "
                       f"{jnp.shape(x)}")
    if x.shape[0] != xs[0].shape[0]:
      raise ValueError(f"{where}: modality {i} has batch size {x.shape[0]}, expected "
                       f"{xs[0].shape[0]} like modality 0")


def _with_one(x: Array) -> Array:
  """[1; x]: (B, d) -> (B, d + 1), the constant first."""
  return jnp.concatenate([jnp.ones((x.shape[0], 1), x.dtype), x], axis=-1)


def named_dense(features, axes, dtype, param_dtype, name, use_bias=True):
  """nn.Dense whose kernel and bias carry the logical axis names `axes` (in, out) and (out,)."""
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=logical(nn.initializers.lecun_normal(), *axes),
                  bias_init=logical(nn.initializers.zeros, axes[-1]))


class MlpHead(nn.Module):
  """(B, D) -> hidden Dense + activation layers -> Dense(out_dim) (or the last hidden layer)."""
  hidden: Sequence[int] = ()
  out_dim: int | None = None
  act: str = "relu"
  out_axis: str = "proj"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = functools.partial(named_dense, dtype=self.dtype, param_dtype=self.param_dtype)
    for i, h in enumerate(self.hidden):
      x = activation(self.act)(dense(h, ("embed", "mlp"), name=f"dense_{i}")(x))  # (B, .) -> (B, h)
    if self.out_dim is not None:
      in_axis = "mlp" if self.hidden else "embed"
      x = dense(self.out_dim, (in_axis, self.out_axis), name="out")(x)           # (B, h) -> (B, o)
    return x


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
    w = jax.nn.softmax(w.astype(jnp.promote_types(w.dtype, jnp.float32))).astype(self.dtype)
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


class GatedFusion(nn.Module):
  """Gated Multimodal Unit, GMU (Arevalo et al. 2017, "Gated Multimodal Units for Information
  Fusion"). With h_i = tanh(W_i x_i) and x = [x_1; ...; x_M]:

    gate='sigmoid', M = 2 (the paper's bimodal GMU):  z = sigmoid(W_z x),
                                                      h = z * h_1 + (1 - z) * h_2
    gate='sigmoid', M > 2 (the paper's k-modality GMU): one independent gate per modality,
                                                      z_i = sigmoid(W_{z_i} x),  h = sum_i z_i * h_i
    gate='softmax' (any M): gates normalised over modalities, z = softmax_i(W_{z_i} x),
                                                      h = sum_i z_i * h_i   (a convex combination;
                                                      for M = 2, the bimodal GMU reparameterised)

  The paper's units have no biases (use_bias=False); use_bias=True adds them. (B, d_i) each ->
  (h (B, features), gates (B, M, features)); the bimodal sigmoid GMU has gates[:, 1] = 1 - z.
  """
  features: int
  gate: str = "sigmoid"
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    if self.gate not in GATES:
      raise ValueError(f"unknown gate {self.gate!r}; expected one of {GATES}")
    check_modalities(xs, type(self).__name__)
    xs = [jnp.asarray(x, self.dtype) for x in xs]
    m = len(xs)
    dense = functools.partial(named_dense, self.features, ("embed", "proj"), self.dtype,
                              self.param_dtype, use_bias=self.use_bias)
    hs = jnp.stack([jnp.tanh(dense(f"proj_{i}")(x)) for i, x in enumerate(xs)], axis=1)  # (B, M, H)
    x = jnp.concatenate(xs, axis=-1)                                            # (B, D)
    if self.gate == "sigmoid" and m == 2:
      z = jax.nn.sigmoid(dense("gate")(x))                                      # (B, D) @ (D, H)
      gates = jnp.stack([z, 1 - z], axis=1)                                     # (B, 2, H)
    else:
      logits = nn.DenseGeneral(
          (m, self.features), use_bias=self.use_bias, dtype=self.dtype,
          param_dtype=self.param_dtype, name="gate",
          kernel_init=logical(nn.initializers.lecun_normal(), "embed", "modality", "proj"),
          bias_init=logical(nn.initializers.zeros, "modality", "proj"))(x)  # (B, D) -> (B, M, H)
      gates = (jax.nn.sigmoid(logits) if self.gate == "sigmoid"
               else jax.nn.softmax(logits.astype(jnp.float32), axis=1).astype(self.dtype))
    return jnp.sum(gates * hs, axis=1), gates


def _norm(x: Array) -> Array:
  """||x||_2 over the last axis, keepdims, in float32, with a zero (not NaN) gradient at 0."""
  sq = jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32))), -1, keepdims=True)
  return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1)), 0)


class ModalityShift(nn.Module):
  """Multimodal Adaptation Gate, MAG (Rahman et al. 2020, "Integrating Multimodal Information in
  Large Pretrained Transformers"): a primary (verbal) embedding Z is shifted by a displacement H
  computed from the other (non-verbal) modalities E_j:

      g_j   = ReLU(W_{g_j} [Z; E_j] + b_{g_j})
      H     = sum_j g_j * (W_j E_j)
      alpha = min(||Z||_2 / (||H||_2 + eps) * beta, 1)
      out   = LayerNorm(Z + alpha H)

  beta is the paper's hyperparameter beta_shift. The paper's displacement bias b_H (and the
  official code's biases on W_j) are left out, so H is linear in the E_j: zero non-verbal inputs
  shift nothing and out = LayerNorm(Z). Dropout is omitted (deterministic). Z (..., D) and E_j
  (..., d_j) share their leading shape (per token as in the paper, or pooled (B, D)) ->
  (out (..., D), alpha (...)).
  """
  beta: float = 1.0
  eps: float = 1e-6
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z, others):
    if not isinstance(others, (list, tuple)) or not others:
      raise ValueError("ModalityShift expects a non-empty list or tuple of non-verbal inputs "
                       f"[(..., d_1), ...], got {type(others).__name__} of length "
                       f"{len(others) if isinstance(others, (list, tuple)) else None}")
    for j, e in enumerate(others):
      if e.shape[:-1] != z.shape[:-1]:
        raise ValueError(f"ModalityShift: non-verbal input {j} has leading shape {e.shape[:-1]}, "
                         f"expected {z.shape[:-1]} like the primary input z {z.shape}")
    d = z.shape[-1]
    z = jnp.asarray(z, self.dtype)
    dense = functools.partial(named_dense, d, dtype=self.dtype, param_dtype=self.param_dtype)
    h = 0
    for j, e in enumerate(others):
      e = jnp.asarray(e, self.dtype)
      g = nn.relu(dense((None, "embed"), name=f"gate_{j}")(jnp.concatenate([z, e], -1)))  # (., D)
      h = h + g * dense((None, "embed"), name=f"shift_{j}", use_bias=False)(e)  # (., dj) @ (dj, D)
    alpha = jnp.minimum(_norm(z) / (_norm(h) + self.eps) * self.beta, 1.0)      # (..., 1) float32
    out = LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="ln")(z + alpha.astype(self.dtype) * h)
    return out, alpha[..., 0]


MAG = ModalityShift


def film(x: Array, gamma: Array, beta: Array) -> Array:
  """Feature-wise linear modulation (Perez et al. 2018, "FiLM: Visual Reasoning with a General
  Conditioning Layer"): gamma * x + beta, per feature (channel).

  x (B, ..., C); gamma, beta (B, C), broadcast over x's middle (e.g. spatial) axes -> (B, ..., C).
  """
  if gamma.shape != beta.shape or gamma.ndim != 2:
    raise ValueError(f"film expects gamma and beta of one shape (B, C), got {gamma.shape} and "
                     f"{beta.shape}")
  if x.ndim < 2 or x.shape[0] != gamma.shape[0] or x.shape[-1] != gamma.shape[-1]:
    raise ValueError(f"film: x of shape {x.shape} does not match gamma/beta of shape "
                     f"{gamma.shape}; expected x (B, ..., C) with the same B and C")
  shape = (gamma.shape[0],) + (1,) * (x.ndim - 2) + (gamma.shape[-1],)
  return gamma.reshape(shape) * x + beta.reshape(shape)


class FiLM(nn.Module):
  """FiLM layer: gamma = W_g c + b_g, beta = W_b c + b_b predicted from the conditioning modality
  c (B, d_c), then film(x, gamma, beta) on x (B, ..., C) -> (B, ..., C).

  delta_gamma=True predicts gamma = 1 + (W_g c + b_g), so a layer whose gamma weights are 0 (or
  small) is (near) the identity on x; False predicts gamma directly, as the paper writes it.
  """
  delta_gamma: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, cond):
    if x.ndim < 2 or cond.ndim != 2 or x.shape[0] != cond.shape[0]:
      raise ValueError(f"FiLM expects x (B, ..., C) and cond (B, d_c) with the same B, got shapes "
                       f"{x.shape} and {cond.shape}")
    c = x.shape[-1]
    cond = jnp.asarray(cond, self.dtype)
    dense = functools.partial(named_dense, c, ("embed", "proj"), self.dtype, self.param_dtype)
    gamma = dense("gamma")(cond)                                                # (B, dc) @ (dc, C)
    beta = dense("beta")(cond)
    if self.delta_gamma:
      gamma = 1 + gamma
    return film(jnp.asarray(x, self.dtype), gamma, beta)
