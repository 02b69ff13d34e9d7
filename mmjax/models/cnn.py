"""A small convolutional image tower, for CPU-sized CLIP training on rendered or low-resolution data.

images (B, H, W, C) -> [3x3 conv, stride 2, ReLU] x len(channels) -> global max or mean pool
  -> (B, channels[-1]).

With hue_pool=True the first convolution sees the image under the three cyclic permutations of its
RGB channels (a 120-degree hue rotation: red -> green -> blue -> red) with shared weights, and the
deeper layers see the elementwise max over the three, so everything after the first layer is
invariant to that rotation: a shape learnt in red and green is recognised in blue. This is the group
convolution + group pooling of colour-equivariant CNNs (Lengyel et al. 2023, "Color Equivariant
Convolutional Networks", NeurIPS), pooled after one layer and over the 3-element group whose
rotations are exact channel permutations. Colour comes from a separate pointwise layer (a Dense
over each pixel's RGB, no spatial context, so it cannot encode shape) on the pixels the first
layer's outputs are centred on, pooled like the rest and concatenated: (B, channels[-1] +
channels[0]). Shape and colour thus reach the embedding through different features, which is what
lets a CLIP model name colour-shape pairs it never saw: on the shapes demo zero-shot accuracy on
unseen pairs goes from 0.56 (plain ConvNet) to 0.93 (BENCHMARKS.md "Demo").
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.common import Dtype, image_input, logical

POOLS = ("max", "mean")


class ConvNet(nn.Module):
  """Convolutional image tower: (B, H, W, C) images -> (B, channels[-1]) pooled features
  ((B, channels[-1] + channels[0]) with hue_pool).

  Attributes:
    channels: output channels of each 3x3 stride-2 convolution (each followed by ReLU).
    pool: 'max' or 'mean' over the final feature map.
    hue_pool: pool the first layer over the cyclic RGB permutations and append pooled pointwise
      colour features (see the module docstring); needs 3-channel images.
    dtype, param_dtype: compute and parameter dtypes.
  """
  channels: tuple[int, ...] = (32, 64, 128, 256)
  pool: str = "max"
  hue_pool: bool = False
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
    if self.hue_pool and images.shape[-1] != 3:
      raise ValueError(f"ConvNet(hue_pool=True) expects RGB images (3 channels), got shape "
                       f"{images.shape}")
    x = image_input(images, self.dtype)  # uint8 pixels are normalised here
    colour = None
    for i, c in enumerate(self.channels):
      conv = nn.Conv(c, (3, 3), strides=(2, 2), padding=1, dtype=self.dtype,
                     param_dtype=self.param_dtype,
                     kernel_init=logical(nn.initializers.he_normal(), None, None, None, "mlp"),
                     bias_init=logical(nn.initializers.zeros, "mlp"), name=f"conv_{i}")
      if self.hue_pool and i == 0:
        # Three calls of one conv (shared weights); on CPU this is 1.8x faster than one call on
        # the three permutations stacked along the batch (measured in the train step).
        rotated = [nn.relu(conv(jnp.roll(x, k, axis=-1))) for k in range(3)]
        # Colour, kept apart from shape: a pointwise layer (no spatial context, so it cannot
        # encode a shape) on the pixels the first layer's outputs are centred on.
        colour = nn.relu(nn.Dense(c, dtype=self.dtype, param_dtype=self.param_dtype,
                                  kernel_init=logical(nn.initializers.he_normal(), None, "mlp"),
                                  bias_init=logical(nn.initializers.zeros, "mlp"),
                                  name="colour")(x[:, ::2, ::2]))
        x = jnp.maximum(jnp.maximum(rotated[0], rotated[1]), rotated[2])
      else:
        x = nn.relu(conv(x))
    pool = ((lambda y: jnp.max(y, axis=(1, 2))) if self.pool == "max"
            else (lambda y: jnp.mean(y, axis=(1, 2))))
    return pool(x) if colour is None else jnp.concatenate([pool(x), pool(colour)], axis=-1)
