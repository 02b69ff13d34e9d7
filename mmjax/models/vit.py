"""Vision Transformer (Dosovitskiy et al. 2021), in the CLIP layout (Radford et al. 2021).

images (B, H, W, C) -> patches (B, H/p * W/p, D) [+ class token] + position embeddings
  -> [ln_pre] -> pre-LN encoder -> pooled (B, D): class token, attention pool (MAP, Lee et al. 2019 /
  Zhai et al. 2022) or global average, followed by ln_post.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.common import Dtype, LayerNorm, image_input, logical
from mmjax.models.transformer import Attention, Encoder, Mlp

POOLS = ("cls", "map", "gap")


class MapHead(nn.Module):
  """Multihead attention pooling: a learned probe attends over the tokens. (B, T, D) -> (B, D)."""
  num_heads: int
  mlp_dim: int
  act: str = "gelu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x, kv_lengths=None):
    b, _, d = x.shape
    probe = self.param("probe", logical(nn.initializers.xavier_uniform(), None, None, "embed"),
                       (1, 1, d), self.param_dtype)
    probe = jnp.broadcast_to(probe, (b, 1, d)).astype(self.dtype)
    x = Attention(self.num_heads, self.dtype, self.param_dtype, self.implementation,
                  name="attn")(probe, x, kv_lengths=kv_lengths)
    y = LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="ln")(x)
    x = x + Mlp(self.mlp_dim, self.act, self.dtype, self.param_dtype, name="mlp")(y)
    return x[:, 0]


class ViT(nn.Module):
  """Vision Transformer image tower: (B, H, W, C) images -> (B, width) pooled features.

  Attributes:
    patch_size, width, depth, num_heads, mlp_dim: the architecture.
    pool: 'cls' (class token), 'map' (attention pooling) or 'gap' (mean of the patch tokens).
    pre_norm: a LayerNorm before the encoder (CLIP's ln_pre).
    patch_bias: a bias in the patch embedding (CLIP has none).
    token_multiple: pad the token sequence to a multiple of this with masked keys; the cuDNN fused
      attention rejects odd lengths in training (197 = 196 patches + class token), so
      implementation='cudnn' pads to an even length by itself.
    remat, scan, implementation, dtype, param_dtype: see mmjax.models.transformer.Encoder.
  """
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  pool: str = "cls"
  pre_norm: bool = True
  patch_bias: bool = False
  act: str = "gelu"
  layer_norm_eps: float = 1e-5
  token_multiple: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None
  remat: str = "none"
  scan: bool = False

  @nn.compact
  def __call__(self, images):
    if images.ndim != 4:
      raise ValueError(f"ViT expects images (batch, height, width, channels), got shape "
                       f"{images.shape}")
    if self.pool not in POOLS:
      raise ValueError(f"unknown pool {self.pool!r}; expected one of {POOLS}")
    p = self.patch_size
    if images.shape[1] % p or images.shape[2] % p:
      raise ValueError(f"image size {images.shape[1:3]} is not divisible by patch_size={p}")
    norm = functools.partial(LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    images = image_input(images, self.dtype)  # uint8 pixels are normalised here
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", use_bias=self.patch_bias,
                dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=logical(nn.initializers.lecun_normal(), None, None, "patch", "embed"),
                bias_init=logical(nn.initializers.zeros, "embed"), name="patch_embed")(images)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)                                   # (B, N, D)
    if self.pool == "cls":
      cls = self.param("cls", logical(nn.initializers.normal(d ** -0.5), "embed"), (d,),
                       self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
    n = x.shape[1]
    pos = self.param("pos_embed", logical(nn.initializers.normal(d ** -0.5), "length", "embed"),
                     (n, d), self.param_dtype)
    x = x + pos.astype(x.dtype)
    if self.pre_norm:
      x = norm(name="ln_pre")(x)
    multiple = max(self.token_multiple, 2 if self.implementation == "cudnn" else 1)
    kv_lengths = None
    if n % multiple:
      x = jnp.pad(x, ((0, 0), (0, -n % multiple), (0, 0)))
      kv_lengths = jnp.full((b,), n, jnp.int32)
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.act, False, self.layer_norm_eps,
                self.dtype, self.param_dtype, self.implementation, self.remat, self.scan,
                name="encoder")(x, kv_lengths)
    if self.pool == "cls":
      x = x[:, 0]
    elif self.pool == "gap":
      x = jnp.mean(x[:, :n], axis=1)
    else:
      x = norm(name="ln_map")(x)
      x = MapHead(self.num_heads, self.mlp_dim, self.act, self.dtype, self.param_dtype,
                  self.implementation, name="map")(x, kv_lengths)
    return norm(name="ln_post")(x)
