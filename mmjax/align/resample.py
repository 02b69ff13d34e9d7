"""Explicit alignment of a padded stream to a reference stream's clock, for early fusion of
unaligned sequences (mmjax.models.sequence.EarlyFusion takes align_to_reference as its aligner).
Pure functions of arrays, jittable, not learned.

  ALIGN_METHODS        "dtw", "ot", "none"
  ALIGN_COSTS          "cosine", "sqeuclidean", "dot"
  alignment_cost       (B, n, C), (B, m, C) -> (B, n, m) pairwise cost of per-step features
  alignment_weights    (B, n, m) nonnegative weights: which real steps of the other stream go to
                       each real reference step (0 on padding)
  align_to_reference   (B, n, D): for each reference step, the weighted average of the other
                       stream's real steps matched to it

Methods (every one ignores the padded steps, so padding never changes a real step's output):
  dtw   the hard DTW path (Sakoe & Chiba 1978, mmjax.align.dtw) from (0, 0) to (len_ref - 1,
        len_other - 1). Rows can only be batched at one shape, so the cost is padded by one extra
        step on both axes: cells past both lengths cost 0, cells past exactly one cost more than
        any real path, and the cheapest path from (0, 0) to the corner then runs through the real
        block to (len_ref - 1, len_other - 1) and diagonally into the free padding block.
  ot    entropic optimal transport (Cuturi 2013, mmjax.align.ot.sinkhorn) with uniform mass on the
        real steps and zero mass on padding, read as a barycentric projection: reference step i
        gets sum_j P_ij v_j / sum_j P_ij.
  none  time-stretch only: reference step i gets the other stream's step floor(i * len_other /
        len_ref), ignoring offsets and warps (the naive baseline).
A row whose other stream has no real step (length 0) gets zeros; a row where either stream is
marked missing (reference_present / other_present False) gets the time-stretch weights.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32
from mmjax.align.dtw import dtw
from mmjax.align.ot import sinkhorn
from mmjax.models.common import length_mask
from mmjax.similarity import l2_normalize, squared_distances

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""

ALIGN_METHODS = ("dtw", "ot", "none")
ALIGN_COSTS = ("cosine", "sqeuclidean", "dot")
_HIGHEST = jax.lax.Precision.HIGHEST


def _check(name: str, x, ndim: int, batch: int | None = None) -> None:
  if jnp.ndim(x) != ndim:
    raise ValueError(f"align_to_reference: {name} must have {ndim} axes, got shape "
                     f"{jnp.shape(x)}")
  if batch is not None and jnp.shape(x)[0] != batch:
    raise ValueError(f"align_to_reference: {name} has batch size {jnp.shape(x)[0]}, expected "
                     f"{batch} like reference_length")


def alignment_cost(x: Array, y: Array, cost: str = "cosine") -> Array:
  """Pairwise cost between per-step features: x (B, n, C), y (B, m, C) -> (B, n, m).

  cost: "cosine" (1 - cos(x_i, y_j), in [0, 2]; a zero row costs 1 against everything),
  "sqeuclidean" (||x_i - y_j||^2) or "dot" (-x_i . y_j).
  """
  if cost == "cosine":
    return 1 - jnp.einsum("bnc,bmc->bnm", l2_normalize(x), l2_normalize(y), precision=_HIGHEST)
  if cost == "sqeuclidean":
    return squared_distances(x, y)
  if cost == "dot":
    dtype = at_least_float32(x, y)
    return -jnp.einsum("bnc,bmc->bnm", x.astype(dtype), y.astype(dtype), precision=_HIGHEST)
  raise ValueError(f"unknown alignment cost {cost!r}; expected one of {ALIGN_COSTS}")


def _dtw_weights(cost: Array, valid_ref: Array, valid_other: Array) -> Array:
  """The hard DTW path over the real block of each row, (B, n, m) 0/1, 0 on padding."""
  vr = jnp.pad(valid_ref, ((0, 0), (0, 1)))                            # (B, n + 1): one pad step
  vo = jnp.pad(valid_other, ((0, 0), (0, 1)))                          # (B, m + 1)
  real = vr[:, :, None] & vo[:, None, :]
  both_padded = ~vr[:, :, None] & ~vo[:, None, :]
  c = jnp.where(real, jnp.pad(cost, ((0, 0), (0, 1), (0, 1))), 0)      # garbage (even NaN) -> 0
  n, m = cost.shape[1:]
  # > 2 (n + m + 2) max|C|: more than any difference between two real paths' costs
  big = 2 * (n + m + 2) * (jnp.max(jnp.abs(c), axis=(1, 2), keepdims=True) + 1)
  c = jnp.where(real | both_padded, c, big)
  path = dtw(c).path                                                   # (B, n + 1, m + 1)
  return jnp.where(real, path, 0)[:, :n, :m]


def _ot_weights(cost, valid_ref, valid_other, epsilon, num_iters, tau) -> Array:
  """The entropic plan with uniform mass on the real steps, (B, n, m), 0 on padding."""
  n, m = cost.shape[1:]
  nr, no = jnp.sum(valid_ref, -1), jnp.sum(valid_other, -1)            # (B,)
  ok = (nr > 0) & (no > 0)                                             # else no mass to move
  a = jnp.where(ok[:, None], valid_ref / jnp.maximum(nr, 1)[:, None], 1 / n).astype(cost.dtype)
  b = jnp.where(ok[:, None], valid_other / jnp.maximum(no, 1)[:, None], 1 / m).astype(cost.dtype)
  real = valid_ref[:, :, None] & valid_other[:, None, :]
  # the first f update reads g = 0 on every column: padded columns must weigh exactly nothing there
  # (exp(-50) below every real term), or a finite num_iters would depend on the padding
  far = jnp.max(jnp.where(real, cost, 0), axis=(1, 2), keepdims=True) + 50 * epsilon + 1
  plan = sinkhorn(jnp.where(real, cost, far), a, b, epsilon=epsilon, num_iters=num_iters,
                  tau_a=tau, tau_b=tau).plan                           # (B, n, m)
  return jnp.where(real & ok[:, None, None], plan, 0)


def _stretch_weights(ref_length, other_length, n: int, m: int, dtype) -> Array:
  """One-hot of j = floor(i * len_other / len_ref) for each real reference step i: (B, n, m)."""
  i = jnp.arange(n)[None, :]                                           # (1, n)
  lr, lo = jnp.asarray(ref_length)[:, None], jnp.asarray(other_length)[:, None]
  j = (i * lo) // jnp.maximum(lr, 1)                                   # (B, n), in [0, lo)
  hit = (i < lr) & (lo > 0)
  return jnp.where(hit[..., None], jax.nn.one_hot(j, m, dtype=dtype), 0)


def alignment_weights(reference_features: Array | None, reference_length: Array,
                      other_features: Array | None, other_length: Array, method: str = "dtw", *,
                      cost: str = "cosine", epsilon: float = 0.05, num_iters: int = 100,
                      tau: float | None = None, other_steps: int | None = None,
                      reference_present: Array | None = None,
                      other_present: Array | None = None) -> Array:
  """Nonnegative weights A (B, n, m): A_ij > 0 when the other stream's real step j is matched to
  the reference's real step i; 0 on every padded step. Not differentiated (stop_gradient).

  Args:
    reference_features: (B, n, C) per-step features of the reference (padding: anything, even
      NaN); unused (may be None) for method "none".
    reference_length: (B,) int, real steps of the reference.
    other_features: (B, m, C) per-step features of the other stream; None for "none".
    other_length: (B,) int, real steps of the other stream.
    method: "dtw", "ot" or "none" (see the module docstring).
    cost: the pairwise cost of the features, see alignment_cost.
    epsilon, num_iters, tau: Sinkhorn's regularisation (in cost units), iterations and marginal
      relaxation (None: balanced), for "ot".
    other_steps: m when other_features is None ("none").
    reference_present, other_present: optional (B,) bool; a row where either stream is missing
      gets the "none" (time-stretch) weights, and its features are never read (they may be NaN).

  Returns:
    (B, n, m) weights: a 0/1 path (dtw, none) or a transport plan (ot).
  """
  if method not in ALIGN_METHODS:
    raise ValueError(f"unknown alignment method {method!r}; expected one of {ALIGN_METHODS}")
  reference_length = jnp.asarray(reference_length, jnp.int32)
  other_length = jnp.asarray(other_length, jnp.int32)
  _check("reference_length", reference_length, 1)
  b = reference_length.shape[0]
  _check("other_length", other_length, 1, b)
  if method == "none":
    n = (reference_features.shape[1] if reference_features is not None else None)
    m = other_steps if other_features is None else other_features.shape[1]
    if n is None or m is None:
      raise ValueError("alignment_weights(method='none') needs reference_features (for n) and "
                       "other_features or other_steps (for m)")
    return _stretch_weights(reference_length, other_length, n, m, jnp.float32)
  if reference_features is None or other_features is None:
    raise ValueError(f"alignment_weights(method={method!r}) needs reference_features and "
                     f"other_features, got None")
  _check("reference_features", reference_features, 3, b)
  _check("other_features", other_features, 3, b)
  if reference_features.shape[-1] != other_features.shape[-1]:
    raise ValueError(f"reference_features {reference_features.shape} and other_features "
                     f"{other_features.shape} must have the same feature size C")
  x = jax.lax.stop_gradient(reference_features)
  y = jax.lax.stop_gradient(other_features)
  (n, m), ok = (x.shape[1], y.shape[1]), jnp.ones((b,), bool)
  for present in (reference_present, other_present):
    if present is not None:
      ok = ok & jnp.asarray(present, bool)
  vr, vo = length_mask(reference_length, n), length_mask(other_length, m)
  x = jnp.where(vr[..., None] & ok[:, None, None], x, 0)              # keep NaN garbage out
  y = jnp.where(vo[..., None] & ok[:, None, None], y, 0)
  c = alignment_cost(x, y, cost)                                       # (B, n, m)
  if method == "dtw":
    w = _dtw_weights(c, vr, vo)
  else:
    w = _ot_weights(c, vr, vo, epsilon, num_iters, tau)
  stretch = _stretch_weights(reference_length, other_length, n, m, w.dtype)
  return jax.lax.stop_gradient(jnp.where(ok[:, None, None], w, stretch))


def align_to_reference(reference_features: Array | None, reference_length: Array,
                       other_features: Array | None, other_length: Array, values: Array,
                       method: str = "dtw", **kwargs) -> Array:
  """Resamples `values` of the other stream onto the reference's clock:

      out_i = sum_j A_ij v_j / sum_j A_ij   (0 where row i has no weight: padding, empty stream),
  with A = alignment_weights(...) (not differentiated; the gradient reaches `values`).

  Args:
    reference_features, reference_length, other_features, other_length, method: see
      alignment_weights (features may be None for method "none").
    values: (B, m, D) what is averaged, e.g. the other stream's raw or embedded steps (padded
      steps are ignored, even NaN).
    **kwargs: cost, epsilon, num_iters, tau, reference_present, other_present of
      alignment_weights.

  Returns:
    (B, n, D) in the values' (at least float32) dtype.
  """
  _check("values", values, 3, jnp.shape(reference_length)[0])
  if reference_features is None and method == "none":
    raise ValueError("align_to_reference(method='none') needs reference_features (or any "
                     "(B, n, C) array) for the reference's number of steps n")
  w = alignment_weights(reference_features, reference_length, other_features, other_length,
                        method, other_steps=values.shape[1], **kwargs)
  dtype = at_least_float32(values)
  v = jnp.where(length_mask(other_length, values.shape[1])[..., None], values, 0).astype(dtype)
  w = w.astype(dtype)
  total = jnp.sum(w, -1, keepdims=True)                                # (B, n, 1)
  out = jnp.einsum("bnm,bmd->bnd", w, v, precision=_HIGHEST)           # (B, n, m) @ (B, m, D)
  return jnp.where(total > 0, out / jnp.where(total > 0, total, 1), 0)
