"""Helpers shared by the alignment modules: argument checks, batching over leading axes."""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32

Array = jax.Array


def as_cost(cost, where: str) -> Array:
  """cost as a float (..., n, m) array with n, m >= 1, else a ValueError naming `where`."""
  cost = jnp.asarray(cost)
  if cost.ndim < 2 or cost.shape[-1] < 1 or cost.shape[-2] < 1:
    raise ValueError(f"{where}: cost must be a (..., n, m) array with n, m >= 1, got shape "
                     f"{cost.shape}")
  return cost.astype(at_least_float32(cost))


def check_positive(value, name: str, where: str) -> None:
  """ValueError unless value is a positive number (traced values pass unchecked)."""
  if isinstance(value, jax.core.Tracer):
    return
  try:
    ok = float(value) > 0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"{where}: {name} must be a positive number, got {value!r}")


def batched(fn: Callable, core_ndim: int, x: Array):
  """fn on the last `core_ndim` axes of x, vmapped over any leading axes (flattened to one).

  fn maps one core array to an array or a tuple of arrays; the leading axes are put back in front
  of every output.
  """
  lead = x.shape[:x.ndim - core_ndim]
  if not lead:
    return fn(x)
  out = jax.vmap(fn)(x.reshape((math.prod(lead),) + x.shape[len(lead):]))
  return jax.tree.map(lambda o: o.reshape(lead + o.shape[1:]), out)
