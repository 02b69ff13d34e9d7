"""Continuous alignment: dynamic time warping and soft-DTW.

  squared_distances   pairwise cost ||x_i - y_j||^2 between two sequences (mmjax.similarity)
  dtw                 DTW value and optimal warping path (Sakoe & Chiba 1978)
  soft_dtw            soft-DTW value, smooth in the cost (Cuturi & Blondel 2017, "Soft-DTW: a
                      Differentiable Loss Function for Time-Series")
  soft_dtw_alignment  its gradient, the expected alignment matrix
  warping_curve       the mean matched column of each row of a (hard or soft) alignment

All take a cost (..., n, m) with any leading batch axes and jit. The dynamic programme
    R_ij = C_ij + min(R_{i-1,j-1}, R_{i-1,j}, R_{i,j-1}),   R_{-1,-1} = 0, R_{-1,j} = R_{i,-1} = inf
runs over the n + m - 1 anti-diagonals i + j = k in a lax.scan: every cell of a diagonal depends
only on the two previous diagonals, so each step is one vectorised operation of length n.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32
from mmjax.align._utils import as_cost, batched, check_positive

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


class DTWOutput(NamedTuple):
  """What dtw returns: the optimal warping cost and path."""
  value: jax.Array
  """(...,) minimum total cost of a warping path."""
  path: jax.Array
  """(..., n, m) 1 on the cells of the optimal path, 0 elsewhere (in the cost's dtype)."""


def _shift(v: Array, first) -> Array:
  """(first, v_0, ..., v_{n-2}): the entries of row i - 1 at row i."""
  return jnp.concatenate([jnp.reshape(first, (1,)).astype(v.dtype), v[:-1]])


def _accumulate(cost: Array, minimum: Callable) -> Array:
  """R on the anti-diagonals, (n, m) -> (n + m - 1, n): table[k, i] = R[i, k - i] (inf off-grid)."""
  n, m = cost.shape
  k = jnp.arange(n + m - 1)[:, None]
  i = jnp.arange(n)[None, :]
  on_grid = (k - i >= 0) & (k - i < m)                                # (n + m - 1, n)
  diagonals = jnp.where(on_grid, cost[i, jnp.clip(k - i, 0, m - 1)], 0)
  inf = jnp.asarray(jnp.inf, cost.dtype)

  def step(carry, xs):
    d1, d2 = carry                                                    # diagonals k - 1, k - 2
    c, ok, k = xs
    up, left = _shift(d1, inf), d1                                    # R[i-1, j], R[i, j-1]
    diag = _shift(d2, jnp.where(k == 0, 0, inf))                      # R[i-1, j-1]
    # off-grid cells get finite dummies, so no inf - inf reaches the (soft) minimum or its gradient
    r = c + minimum(*(jnp.where(ok, t, 0) for t in (diag, up, left)))
    r = jnp.where(ok, r, inf)
    return (r, d1), r

  init = (jnp.full((n,), inf), jnp.full((n,), inf))
  _, table = jax.lax.scan(step, init, (diagonals, on_grid, jnp.arange(n + m - 1)))
  return table


def _hard_min(*xs):
  return jnp.min(jnp.stack(xs), axis=0)


def _soft_min(gamma):
  def soft_min(*xs):   # -gamma log sum exp(-x / gamma); exact min at gamma = 0
    return -gamma * jax.nn.logsumexp(-jnp.stack(xs) / gamma, axis=0)
  return soft_min


def _backtrack(table: Array, n: int, m: int) -> Array:
  """The optimal path from (n-1, m-1) back to (0, 0), as an (n, m) 0/1 matrix."""
  inf = jnp.asarray(jnp.inf, table.dtype)

  def r(i, j):
    return jnp.where((i >= 0) & (j >= 0), table[jnp.maximum(i + j, 0), jnp.maximum(i, 0)], inf)

  moves = jnp.array([[1, 1], [1, 0], [0, 1]])                          # diagonal first on ties

  def step(state, _):
    i, j, path = state
    path = path.at[i, j].set(1)
    best = jnp.argmin(jnp.stack([r(i - 1, j - 1), r(i - 1, j), r(i, j - 1)]))
    start = (i == 0) & (j == 0)
    return (jnp.where(start, 0, i - moves[best, 0]), jnp.where(start, 0, j - moves[best, 1]),
            path), None

  init = (jnp.asarray(n - 1), jnp.asarray(m - 1), jnp.zeros((n, m), table.dtype))
  (_, _, path), _ = jax.lax.scan(step, init, None, length=n + m - 1)
  return path


def dtw(cost: Array) -> DTWOutput:
  """Dynamic time warping (Sakoe & Chiba 1978): the cheapest monotone, continuous path from (0, 0)
  to (n-1, m-1) through the cost matrix, with steps (1, 1), (1, 0) and (0, 1):

      DTW(C) = min over warping paths A of <A, C>,
  computed by the recursion in the module docstring and backtracked (ties prefer the diagonal).

  Args:
    cost: (..., n, m) pairwise costs, e.g. squared_distances(x, y); any leading batch axes.

  Returns:
    DTWOutput(value (...,), path (..., n, m) 0/1 with value = sum(path * cost)).
  """
  cost = as_cost(cost, "dtw")
  n, m = cost.shape[-2:]

  def one(c):
    table = _accumulate(c, _hard_min)
    return table[-1, n - 1], _backtrack(table, n, m)

  return DTWOutput(*batched(one, 2, cost))


def soft_dtw(cost: Array, gamma: float = 1.0) -> Array:
  """Soft-DTW (Cuturi & Blondel 2017): DTW with the minimum replaced by the soft minimum

      min_gamma(r_1, r_2, r_3) = -gamma log sum_k exp(-r_k / gamma),
      soft_dtw(C) = -gamma log sum over warping paths A of exp(-<A, C> / gamma).

  Smooth in C for gamma > 0; DTW - gamma log(3) (n + m - 1) <= soft_dtw <= DTW (each of the at most
  n + m - 1 soft minima is within gamma log 3 of the minimum), so it tends to DTW as gamma -> 0. Its
  gradient in C is the expected alignment E[A] under the Gibbs distribution over paths
  (soft_dtw_alignment); autodiff through the diagonal scan computes it in O(nm), like the paper's
  backward recursion. For sequences, differentiate soft_dtw(squared_distances(x, y)) in x or y.

  Args:
    cost: (..., n, m) pairwise costs.
    gamma: smoothing, > 0 (in the cost's units).

  Returns:
    (...,) soft-DTW values.
  """
  cost = as_cost(cost, "soft_dtw")
  check_positive(gamma, "gamma", "soft_dtw")
  n = cost.shape[-2]
  return batched(lambda c: _accumulate(c, _soft_min(gamma))[-1, n - 1], 2, cost)


def soft_dtw_alignment(cost: Array, gamma: float = 1.0) -> Array:
  """The expected alignment E[A] = d soft_dtw / d C: (..., n, m) -> (..., n, m), entries in [0, 1],
  tending to the DTW path as gamma -> 0 (where the optimal path is unique)."""
  cost = as_cost(cost, "soft_dtw_alignment")
  return jax.grad(lambda c: jnp.sum(soft_dtw(c, gamma)))(cost)


def warping_curve(alignment: Array) -> Array:
  """Mean matched column of each row, sum_j j A_ij / sum_j A_ij: (..., n, m) -> (..., n).

  For a DTW path this is the estimated warp j(i) (the middle of the columns matched to row i); for a
  soft alignment, its expectation."""
  alignment = jnp.asarray(alignment)
  if alignment.ndim < 2:
    raise ValueError(f"warping_curve expects an alignment (..., n, m), got shape "
                     f"{alignment.shape}")
  j = jnp.arange(alignment.shape[-1], dtype=at_least_float32(alignment))
  return jnp.sum(alignment * j, -1) / jnp.maximum(jnp.sum(alignment, -1), 1e-12)
