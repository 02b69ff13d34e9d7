"""Gated coordination: two modalities in, two representations out, each contextualised by both.

Coordination (Liang, Zadeh & Morency 2023, "Foundations & Trends in Multimodal Machine Learning:
Principles, Challenges, and Open Questions", Sec. 3, representation coordination) keeps one
representation per modality, unlike fusion, but lets each see the other ("partial coordination").
The gates follow the Gated Multimodal Unit (Arevalo et al. 2017, mmjax.models.fusion.GatedFusion),
one per output stream.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.common import Dtype, check_modalities, named_dense


class GatedCoordination(nn.Module):
  """Two gated, mutually contextualised outputs. With x = [x_1; x_2]:

      g_1 = sigmoid(W_{g1} x + b_{g1}),   y_1 = g_1 * (A_1 x_1 + a_1) + (1 - g_1) * (C_1 x_2 + c_1)
      g_2 = sigmoid(W_{g2} x + b_{g2}),   y_2 = g_2 * (A_2 x_2 + a_2) + (1 - g_2) * (C_2 x_1 + c_2)

  Each output lives in its own space (y_1 for modality 1, y_2 for modality 2) and takes from the
  other modality only as much as its gate lets through: g_i -> 1 gives the unimodal
  y_i = A_i x_i + a_i, g_i -> 0 the cross-modal map C_i x_j + c_i. Train the pair with a
  coordination objective from mmjax.losses (e.g. clip_loss or cca_loss on (y_1, y_2)) or feed both
  on to later layers.

  Attributes:
    features: output width, one int for both or a pair (F_1, F_2).
  Returns:
    (y_1 (B, F_1), y_2 (B, F_2)) from x_1 (B, d_1), x_2 (B, d_2).
  """
  features: int | tuple[int, int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x1, x2):
    check_modalities([x1, x2], type(self).__name__, count=2)
    f1, f2 = (self.features,) * 2 if isinstance(self.features, int) else self.features
    x1, x2 = jnp.asarray(x1, self.dtype), jnp.asarray(x2, self.dtype)
    x = jnp.concatenate([x1, x2], axis=-1)                                      # (B, d1 + d2)
    dense = functools.partial(named_dense, axes=("embed", "proj"), dtype=self.dtype,
                              param_dtype=self.param_dtype)

    def stream(i, f, own, other):
      g = jax.nn.sigmoid(dense(f, name=f"gate_{i}")(x))                      # (B, d1+d2) @ (., F)
      return g * dense(f, name=f"own_{i}")(own) + (1 - g) * dense(f, name=f"cross_{i}")(other)

    return stream(1, f1, x1, x2), stream(2, f2, x2, x1)
