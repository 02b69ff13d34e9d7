"""Helpers shared by the loss modules: shape checks, float32 logits, cross-device gathering."""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32

Array = jax.Array


def check_pair(x: Array, y: Array, names: tuple[str, str]) -> None:
  """ValueError unless x and y are (batch, dim) arrays of one shape."""
  if x.ndim != 2 or y.ndim != 2 or x.shape != y.shape:
    raise ValueError(f"{names[0]} and {names[1]} must be matching (batch, dim) arrays, got shapes "
                     f"{x.shape} and {y.shape}")


def check_views(views: Sequence[Array], names: Sequence[str]) -> None:
  """ValueError unless every view is a (batch, dim) array and all have one batch size (their dims
  may differ)."""
  for v, name in zip(views, names):
    if v.ndim != 2:
      raise ValueError(f"{name} must be a (batch, dim) array, got shape {v.shape}")
  for v, name in zip(views[1:], names[1:]):
    if v.shape[0] != views[0].shape[0]:
      raise ValueError(f"{names[0]} and {name} must have the same batch size, got shapes "
                       f"{views[0].shape} and {v.shape}")


def logits_of(q: Array, k: Array, scale) -> Array:
  """scale * q @ k.T with float32 (or wider) accumulation: (n, d) @ (d, m) -> (n, m)."""
  acc = at_least_float32(q, k)
  return jnp.asarray(scale, acc) * jnp.einsum("nd,md->nm", q, k, preferred_element_type=acc)


def gather(x: Array, axis_name) -> tuple[Array, Array]:
  """The global batch (tiled all_gather) and the offset of this device's rows in it."""
  if axis_name is None:
    return x, jnp.zeros((), jnp.int32)
  return (jax.lax.all_gather(x, axis_name, tiled=True),
          jax.lax.axis_index(axis_name) * x.shape[0])


def global_mean(local_sum: Array, local_count: int, axis_name) -> Array:
  if axis_name is None:
    return local_sum / local_count
  return jax.lax.psum(local_sum, axis_name) / jax.lax.psum(local_count, axis_name)
