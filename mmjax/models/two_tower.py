"""CLIP / SigLIP dual encoder: two towers, linear projections, L2 normalisation, logit scale (and bias).

Radford et al. 2021 (CLIP): scale = exp(t), t initialised to log(1/0.07), clamped at 100.
Zhai et al. 2023 (SigLIP): scale initialised to 10 and a learnable bias to -10.
Zhai et al. 2022 (LiT): lock='image' (or 'text') stops gradients at that tower's output, so it stays
as loaded while the other tower and both projections learn.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import UserError
from mmjax.models.cnn import ConvNet
from mmjax.models.common import Dtype, logical
from mmjax.models.text import TextTransformer
from mmjax.models.vit import ViT
from mmjax.similarity import l2_normalize

LOSSES = ("clip", "siglip")
LOCKS = (None, "image", "text")


class TwoTowerOutput(NamedTuple):
  """TwoTower's outputs for a batch of B pairs: unit-norm embeddings of width E, scale and bias."""
  image: jax.Array              # (B, E) L2-normalised, float32
  text: jax.Array               # (B, E) L2-normalised, float32
  scale: jax.Array              # () exp(t), clamped at max_scale
  bias: jax.Array | None        # () SigLIP logit bias, None for CLIP


class TwoTower(nn.Module):
  """Image tower + text tower + projections to a shared embed_dim.

  Attributes:
    image_encoder: images (B, H, W, C) -> (B, Di), e.g. ViT.
    text_encoder: tokens (B, L) -> (B, Dt), e.g. TextTransformer.
    embed_dim: E, the shared embedding width.
    loss: 'clip' or 'siglip' (decides the scale init and whether there is a bias).
    init_scale: initial exp(t); None means 1/0.07 for CLIP, 10 for SigLIP.
    init_bias: initial SigLIP bias.  max_scale: clamp of exp(t).
    lock: None, 'image' or 'text' (LiT).
  """
  image_encoder: nn.Module
  text_encoder: nn.Module
  embed_dim: int
  loss: str = "clip"
  init_scale: float | None = None
  init_bias: float = -10.0
  max_scale: float = 100.0
  lock: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.loss not in LOSSES:
      raise UserError(f"unknown loss {self.loss!r}; expected one of {LOSSES}")
    if self.lock not in LOCKS:
      raise UserError(f"unknown lock {self.lock!r}; expected one of {LOCKS}")
    proj = lambda name: nn.Dense(
        self.embed_dim, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=logical(nn.initializers.lecun_normal(), "embed", "proj"), name=name)
    self.image_proj = proj("image_proj")
    self.text_proj = proj("text_proj")
    init_scale = self.init_scale or (1 / 0.07 if self.loss == "clip" else 10.0)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(init_scale)),
                                  (), jnp.float32)
    if self.loss == "siglip":
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.init_bias), (),
                                   jnp.float32)

  def encode_image(self, images) -> jax.Array:
    """(B, H, W, C) -> (B, E) L2-normalised float32 embeddings."""
    features = self.image_encoder(images)
    if self.lock == "image":
      features = jax.lax.stop_gradient(features)
    return l2_normalize(self.image_proj(features))

  def encode_text(self, tokens) -> jax.Array:
    """(B, L) int tokens -> (B, E) L2-normalised float32 embeddings."""
    features = self.text_encoder(tokens)
    if self.lock == "text":
      features = jax.lax.stop_gradient(features)
    return l2_normalize(self.text_proj(features))

  def scale(self) -> jax.Array:
    """The logit scale exp(t) as a () float32, clamped at max_scale (CLIP clamps at 100)."""
    return jnp.minimum(jnp.exp(self.logit_scale), self.max_scale)

  def __call__(self, images, tokens) -> TwoTowerOutput:
    bias = self.logit_bias if self.loss == "siglip" else None
    return TwoTowerOutput(self.encode_image(images), self.encode_text(tokens), self.scale(), bias)


_TEXT_CLIP = dict(vocab_size=49408, context_length=77, width=512, depth=12, num_heads=8,
                  mlp_dim=2048)
PRESETS: dict[str, dict[str, Any]] = {
    # CPU demo size: 64x64 images, the byte-level tokenizer's 259-token vocabulary.
    "tiny": dict(image_size=64, embed_dim=64,
                 image=dict(patch_size=8, width=64, depth=2, num_heads=2, mlp_dim=256),
                 text=dict(vocab_size=259, context_length=32, width=64, depth=2, num_heads=2,
                           mlp_dim=256)),
    "S/16": dict(image_size=224, embed_dim=384,
                 image=dict(patch_size=16, width=384, depth=12, num_heads=6, mlp_dim=1536),
                 text=dict(_TEXT_CLIP, width=384, num_heads=6, mlp_dim=1536)),
    "B/32": dict(image_size=224, embed_dim=512,
                 image=dict(patch_size=32, width=768, depth=12, num_heads=12, mlp_dim=3072),
                 text=_TEXT_CLIP),
    "B/16": dict(image_size=224, embed_dim=512,
                 image=dict(patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072),
                 text=_TEXT_CLIP),
    "L/14": dict(image_size=224, embed_dim=768,
                 image=dict(patch_size=14, width=1024, depth=24, num_heads=16, mlp_dim=4096),
                 text=dict(_TEXT_CLIP, width=768, num_heads=12, mlp_dim=3072)),
}


def image_encoder(preset: str, overrides=None, *, dtype: Dtype = jnp.float32,
                  param_dtype: Dtype = jnp.float32, implementation: str | None = None,
                  remat: str = "none", scan: bool = False) -> nn.Module:
  """The image tower of a preset: its ViT with `overrides` replacing fields, or, when overrides
  holds arch='cnn', a ConvNet built from the other overrides (channels, pool, hue_pool)."""
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
  overrides = dict(overrides or {})
  arch = overrides.pop("arch", "vit")
  if arch == "cnn":
    return ConvNet(**overrides, dtype=dtype, param_dtype=param_dtype)
  if arch != "vit":
    raise UserError(f"unknown image arch {arch!r}; expected 'vit' or 'cnn'")
  return ViT(**{**PRESETS[preset]["image"], "dtype": dtype, "param_dtype": param_dtype,
                "implementation": implementation, "remat": remat, "scan": scan, **overrides})


def two_tower(preset: str, *, loss: str = "clip", lock: str | None = None, dtype: Dtype = jnp.float32,
              param_dtype: Dtype = jnp.float32, implementation: str | None = None,
              remat: str = "none", scan: bool = False, image_overrides=None,
              text_overrides=None) -> TwoTower:
  """A TwoTower of a preset size ('tiny', 'S/16', 'B/32', 'B/16', 'L/14'): ViT + TextTransformer.

  image_overrides / text_overrides replace preset fields (e.g. dict(pool='map')); image_overrides
  with arch='cnn' makes the image tower a ConvNet (see image_encoder).
  """
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
  cfg = PRESETS[preset]
  common = dict(dtype=dtype, param_dtype=param_dtype, implementation=implementation, remat=remat,
                scan=scan)
  image = image_encoder(preset, image_overrides, **common)
  text = TextTransformer(**{**cfg["text"], **common, **(text_overrides or {})})
  return TwoTower(image, text, cfg["embed_dim"], loss=loss, lock=lock, dtype=dtype,
                  param_dtype=param_dtype)
