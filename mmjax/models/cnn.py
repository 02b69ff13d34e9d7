"""A small convolutional image tower, for CPU-sized CLIP training on rendered or low-resolution data.

images (B, H, W, C) -> [3x3 conv, stride 2, ReLU] x len(channels) -> global max or mean pool
  -> (B, channels[-1]).

The convolutions are translation-equivariant, so a shape is recognised wherever it lies, which a
from-scratch ViT has to learn from data (Dosovitskiy et al. 2021, Sec. 3.1 on inductive bias);
CLIP's own ResNet towers (Radford et al. 2021) are the large-scale form. There is no per-pixel
normalisation: on flat backgrounds a per-pixel LayerNorm rescales the sensor noise to unit
variance. Max pooling keeps a small object's response, which a mean over a mostly empty image
dilutes.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.transformer import Dtype, logical

POOLS = ("max", "mean")


class ConvNet(nn.Module):
  """Convolutional image tower: (B, H, W, C) images -> (B, channels[-1]) pooled features.

  Attributes:
    channels: output channels of each 3x3 stride-2 convolution (each followed by ReLU).
    pool: 'max' or 'mean' over the final feature map.
    dtype, param_dtype: compute and parameter dtypes.
  """
  channels: tuple[int, ...] = (32, 64, 128, 256)
  pool: str = "max"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    if images.ndim != 4:
      raise ValueError(f"ConvNet expects images (batch, height, width, channels), got shape "
                       f"{images.shape}")
    if self.pool not in POOLS:
      raise ValueError(f"unknown pool {self.pool!r}; expected one of {POOLS}")
    if not self.channels:
      raise ValueError("ConvNet needs at least one entry in channels")
    x = images.astype(self.dtype)
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (3, 3), strides=(2, 2), padding=1, dtype=self.dtype,
                  param_dtype=self.param_dtype,
                  kernel_init=logical(nn.initializers.he_normal(), None, None, None, "mlp"),
                  bias_init=logical(nn.initializers.zeros, "mlp"), name=f"conv_{i}")(x)
      x = nn.relu(x)
    return jnp.max(x, axis=(1, 2)) if self.pool == "max" else jnp.mean(x, axis=(1, 2))
