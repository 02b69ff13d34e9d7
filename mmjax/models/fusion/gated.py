"""Gated and conditional fusion: a modality weighs, shifts or modulates the others.

  GatedFusion           GMU (Arevalo et al. 2017): gated sum of tanh projections; returns (h, gates)
  ModalityShift (MAG)   Rahman et al. 2020: a primary embedding shifted by gated other modalities
  FiLM, film            Perez et al. 2018: gamma(c) * x + beta(c)

Input checks, dtypes and the logical axis names of the params: see mmjax.models.fusion.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32
from mmjax.models.common import Dtype, LayerNorm, check_modalities, logical, named_dense

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""
GATES = ("sigmoid", "softmax")


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
  sq = jnp.sum(jnp.square(x.astype(at_least_float32(x))), -1, keepdims=True)
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
