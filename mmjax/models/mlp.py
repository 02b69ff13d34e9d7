"""MLP encoder for feature vectors (tabular, audio or sensor features, or frozen embeddings)."""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.common import Dtype, LayerNorm, activation, logical


class MlpEncoder(nn.Module):
  """(B, Din) -> hidden layers with activation (and optional LayerNorm) -> (B, out_dim).

  With out_dim None the last hidden layer is the output. Deep CCA (Andrew et al. 2013) uses such
  encoders on each view, with a linear last layer.
  """
  hidden: Sequence[int]
  out_dim: int | None = None
  act: str = "relu"
  norm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if x.ndim != 2:
      raise ValueError(f"MlpEncoder expects (batch, features), got shape {x.shape}")
    for i, h in enumerate(self.hidden):
      x = nn.Dense(h, dtype=self.dtype, param_dtype=self.param_dtype,
                   kernel_init=logical(nn.initializers.lecun_normal(), "embed", "mlp"),
                   bias_init=logical(nn.initializers.zeros, "mlp"), name=f"dense_{i}")(x)
      if self.norm:
        x = LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"ln_{i}",
                      scale_init=logical(nn.initializers.ones, "mlp"),
                      bias_init=logical(nn.initializers.zeros, "mlp"))(x)
      x = activation(self.act)(x)
    if self.out_dim is not None:
      x = nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                   kernel_init=logical(nn.initializers.lecun_normal(), "mlp", "embed"),
                   bias_init=logical(nn.initializers.zeros, "embed"), name="out")(x)
    return x
