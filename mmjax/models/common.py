"""Helpers shared by the model files: dtypes, activations, logically named params, input checks.

  Dtype               the type of dtype / param_dtype attributes
  ACTIVATIONS         name -> activation function (gelu, gelu_tanh, quick_gelu, relu)
  activation(name)    one of them, with a ValueError listing the names
  logical(init, ...)  an initializer whose param carries logical axis names
                      (mmjax.parallel.LOGICAL_RULES maps them onto the device mesh)
  LayerNorm           nn.LayerNorm with logically named scale and bias
  length_mask         (B,) lengths -> (B, T) bool, the real steps of padded sequences
  time_positions      (B,) lengths -> (B, T) each step's centre on its sequence's normalised time
  named_dense         nn.Dense with logically named kernel and bias
  MlpHead             hidden Dense + activation layers, then an output Dense: (B, D) -> (B, out_dim)
  check_modalities    checks a list of (B, d_i) modality arrays, ValueError naming the bad one
  image_input         uint8 pixels -> CLIP-normalised floats inside the jitted step (image towers)
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax._pixels import CLIP_MEAN, CLIP_STD

Dtype = Any
"""@private The type of dtype arguments (a numpy or jax dtype)."""

ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP
    "relu": nn.relu,
}


def logical(init, *names):
  """An initializer whose parameter carries the logical axis names `names`."""
  return nn.with_logical_partitioning(init, names)


def activation(name: str):
  """The activation function called `name` (a key of ACTIVATIONS); ValueError listing them."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def image_input(images, dtype, mean=CLIP_MEAN, std=CLIP_STD):
  """(B, H, W, C) images as the tower computes on them, in `dtype`: uint8 pixels are normalised
  on the device, (x / 255 - mean) / std per channel (in float32, then cast), so the host sends 1
  byte per value instead of 4; float images are taken as already normalised and only cast."""
  if images.dtype != jnp.uint8:
    return images.astype(dtype)
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) / 255.0 - mean[:images.shape[-1]])
          / std[:images.shape[-1]]).astype(dtype)


class LayerNorm(nn.LayerNorm):
  """nn.LayerNorm with logically named scale and bias, reductions in fp32."""
  scale_init: Any = logical(nn.initializers.ones, "embed")
  """@private ones, with the logical axis name 'embed'."""
  bias_init: Any = logical(nn.initializers.zeros, "embed")
  """@private zeros, with the logical axis name 'embed'."""


def length_mask(lengths, steps: int):
  """(B,) lengths -> (B, steps) bool, True on the first lengths[b] steps of each row (the real
  steps of a padded sequence)."""
  return jnp.arange(steps) < jnp.asarray(lengths)[:, None]


def time_positions(lengths, steps: int, scale: float = 1.0):
  """(B,), T -> (B, T) float32: step t of a row of n real steps at scale * (t + 0.5) / n, the
  centre of its interval on the sequence's normalised time [0, 1], stretched so that [0, 1] spans
  `scale` units. Sequences at different rates then share one clock: the first and last steps of
  each sit near 0 and scale. A row with n = 0 is taken as n = 1. MTAG's graph nodes sit here
  (mmjax.models.mtag_graph.graph_nodes, scale 1), and so do the "time" positions of the sequence
  models (mmjax.models.sequence.StreamEmbed)."""
  t = jnp.arange(steps, dtype=jnp.float32)[None] + 0.5                # (1, T)
  return scale * t / jnp.maximum(jnp.asarray(lengths), 1)[:, None].astype(jnp.float32)


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
                       f"{xs[0].shape[0]} like modality 0 (the same batch size for all)")
