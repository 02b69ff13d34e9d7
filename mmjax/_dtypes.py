"""The "at least float32" rule: losses, logits, norms and kernels are computed in float32, or in
float64 when an input is float64 (under x64), whatever narrower dtype (bf16, fp16, int) the inputs
have."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def at_least_float32(*xs):
  """promote_types(result_type(*xs), float32): float32, or float64 when an input is float64.

  Integer and bool inputs give float32; so do bf16 / fp16.
  """
  return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def upcast(*xs) -> list[jax.Array]:
  """xs as arrays of their common at_least_float32 dtype (a list, one per input)."""
  dtype = at_least_float32(*xs)
  return [jnp.asarray(x).astype(dtype) for x in xs]
