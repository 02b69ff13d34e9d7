"""Discrete alignment by optimal transport, and exact one-to-one matching.

  sinkhorn            entropic OT plan between two weighted sets (Cuturi 2013, "Sinkhorn
                      Distances"), log-domain iterations (Peyre & Cuturi 2019, "Computational
                      Optimal Transport", 4.4), optional KL-relaxed marginals (unbalanced OT,
                      Chizat et al. 2018, "Scaling Algorithms for Unbalanced Optimal Transport
                      Problems")
  hard_matching       the exact minimum-cost one-to-one assignment: the Hungarian algorithm (Kuhn
                      1955) in its shortest-augmenting-path form with potentials (Jonker & Volgenant
                      1987), in lax loops, so it jits and batches
  ot_alignment_loss   OT distance between two sets of element embeddings under the cosine cost,
                      UNITER's word-region alignment (Chen et al. 2020, "UNITER: UNiversal
                      Image-TExt Representation Learning")

Everything takes a cost (..., n, m) with any leading (batch) axes and runs in float32 (float64 when
the cost is float64).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32
from mmjax.align._utils import as_cost, batched, check_positive
from mmjax.similarity import l2_normalize

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


class SinkhornOutput(NamedTuple):
  """What sinkhorn returns: the entropic transport plan, its dual potentials and diagnostics."""
  plan: jax.Array
  """(..., n, m) transport plan P."""
  f: jax.Array
  """(..., n) row potentials."""
  g: jax.Array
  """(..., m) column potentials."""
  cost: jax.Array
  """(...,) <P, C>, the transport cost of the plan."""
  error: jax.Array
  """(...,) ||P 1 - a||_1 + ||P^T 1 - b||_1, the marginal violation."""


def _log_marginal(w, shape: tuple[int, ...], dtype, name: str) -> tuple[Array, Array]:
  """(w, log w) broadcast to `shape`; uniform 1/n when w is None; log 0 = -inf (no mass there)."""
  if w is None:
    w = jnp.full(shape, 1.0 / shape[-1], dtype)
  else:
    w = jnp.asarray(w, dtype)
    try:
      w = jnp.broadcast_to(w, shape)
    except ValueError:
      raise ValueError(f"sinkhorn: {name} has shape {w.shape}, expected {shape} (the cost's "
                       f"{'rows' if name == 'a' else 'columns'}, with its batch axes)") from None
  positive = w > 0
  return w, jnp.where(positive, jnp.log(jnp.where(positive, w, 1)), -jnp.inf)


def _relaxation(tau, epsilon, name: str):
  """tau / (tau + eps): the damping of an unbalanced update (1, no damping, when tau is None)."""
  if tau is None:
    return 1.0
  check_positive(tau, name, "sinkhorn")
  return tau / (tau + epsilon)


def sinkhorn(cost: Array, a: Array | None = None, b: Array | None = None, *,
             epsilon: float = 0.05, num_iters: int = 200, tau_a: float | None = None,
             tau_b: float | None = None) -> SinkhornOutput:
  """Entropic optimal transport between two weighted sets, in the log domain.

  Solves, for a cost C (n, m) and marginals a (n,), b (m,),
      min_P  <P, C> - eps H(P) + tau_a KL(P 1 | a) + tau_b KL(P^T 1 | b),
      H(P) = -sum_ij P_ij (log P_ij - 1),
  where tau = None means the hard constraint (P 1 = a, or P^T 1 = b: balanced OT, Cuturi 2013) and a
  finite tau the KL relaxation of unbalanced OT (Chizat et al. 2018). With potentials f, g the
  iterations are (Peyre & Cuturi 2019, 4.4, log-domain Sinkhorn; Chizat et al. 2018, the scaling
  algorithm for KL-relaxed marginals, in log form)
      f_i = lam_a (eps log a_i - eps LSE_j((g_j - C_ij) / eps)),   lam_a = tau_a / (tau_a + eps),
      g_j = lam_b (eps log b_j - eps LSE_i((f_i - C_ij) / eps)),   lam_b = tau_b / (tau_b + eps),
      P_ij = exp((f_i + g_j - C_ij) / eps),
  with lam = 1 when balanced. LSE never overflows, so eps can be small relative to the cost. Zero
  weights are allowed (padding): their rows or columns of P are 0. Balanced OT needs sum a = sum b;
  after the last (g) update the column marginals are exact and `error` tells how far the rows are.

  Differentiable: the iterations run in a lax.scan that autodiff unrolls; the body is
  rematerialised, so the backward pass stores only the potentials of each iteration.

  Args:
    cost: (..., n, m) cost matrix C, any leading batch axes.
    a: (..., n) row weights (broadcastable), default uniform 1/n.
    b: (..., m) column weights, default uniform 1/m.
    epsilon: entropic regularisation, in the cost's units (smaller: sharper plans, slower).
    num_iters: Sinkhorn iterations (one f and one g update each).
    tau_a, tau_b: KL weights of the marginal relaxations; None keeps the marginal exact.

  Returns:
    SinkhornOutput(plan (..., n, m), f (..., n), g (..., m), cost (...,), error (...,)).
  """
  cost = as_cost(cost, "sinkhorn")
  check_positive(epsilon, "epsilon", "sinkhorn")
  if not isinstance(num_iters, int) or num_iters < 1:
    raise ValueError(f"sinkhorn: num_iters must be an int >= 1, got {num_iters!r}")
  a, log_a = _log_marginal(a, cost.shape[:-1], cost.dtype, "a")
  b, log_b = _log_marginal(b, cost.shape[:-2] + cost.shape[-1:], cost.dtype, "b")
  lam_a, lam_b = _relaxation(tau_a, epsilon, "tau_a"), _relaxation(tau_b, epsilon, "tau_b")
  lse = jax.nn.logsumexp

  @jax.checkpoint
  def step(carry, _):
    f, g = carry
    f = lam_a * (epsilon * log_a - epsilon * lse((g[..., None, :] - cost) / epsilon, axis=-1))
    g = lam_b * (epsilon * log_b - epsilon * lse((f[..., :, None] - cost) / epsilon, axis=-2))
    return (f, g), None

  f0, g0 = jnp.zeros_like(log_a), jnp.zeros_like(log_b)
  (f, g), _ = jax.lax.scan(step, (f0, g0), None, length=num_iters)
  plan = jnp.exp((f[..., :, None] + g[..., None, :] - cost) / epsilon)
  error = (jnp.sum(jnp.abs(jnp.sum(plan, -1) - a), -1)
           + jnp.sum(jnp.abs(jnp.sum(plan, -2) - b), -1))
  return SinkhornOutput(plan, f, g, jnp.sum(plan * cost, axis=(-2, -1)), error)


# --------------------------------------------------------------------------------- hard matching

def _hungarian(cost: Array) -> Array:
  """Column of each row in a minimum-cost assignment, n <= m: (n, m) -> (n,) int32.

  The O(n^2 m) shortest-augmenting-path Hungarian algorithm with row and column potentials u, v
  (1-based, column 0 a dummy): each new row i grows a Dijkstra tree over reduced costs
  C_ij - u_i - v_j until it reaches a free column, then flips the path. p[j] is the row holding
  column j (0: free); the inner minimum over columns is vectorised.
  """
  n, m = cost.shape
  c = jnp.pad(cost, ((1, 0), (1, 0)))                                  # (n + 1, m + 1)
  inf = jnp.asarray(jnp.inf, cost.dtype)

  def add_row(i, state):
    u, v, p = state
    p = p.at[0].set(i.astype(jnp.int32))

    def grow(s):                                                       # one Dijkstra step
      u, v, minv, used, way, j0 = s
      used = used.at[j0].set(True)
      i0 = p[j0]
      reduced = c[i0] - u[i0] - v                                      # (m + 1,)
      better = ~used & (reduced < minv)
      minv = jnp.where(better, reduced, minv)
      way = jnp.where(better, j0, way)
      masked = jnp.where(used, inf, minv)
      j1 = jnp.argmin(masked).astype(jnp.int32)
      delta = masked[j1]
      u = u.at[p].add(jnp.where(used, delta, 0))                       # rows of the tree
      v = jnp.where(used, v - delta, v)
      minv = jnp.where(used, minv, minv - delta)
      return u, v, minv, used, way, j1

    init = (u, v, jnp.full((m + 1,), inf), jnp.zeros((m + 1,), bool),
            jnp.zeros((m + 1,), jnp.int32), jnp.zeros((), jnp.int32))
    u, v, _, _, way, j0 = jax.lax.while_loop(lambda s: p[s[5]] != 0, grow, init)

    def flip(s):                                                       # augment along `way`
      p, j0 = s
      j1 = way[j0]
      return p.at[j0].set(p[j1]), j1

    p, _ = jax.lax.while_loop(lambda s: s[1] != 0, flip, (p, j0))
    return u, v, p

  zeros = jnp.zeros((m + 1,), cost.dtype)
  _, _, p = jax.lax.fori_loop(1, n + 1, add_row,
                              (jnp.zeros((n + 1,), cost.dtype), zeros,
                               jnp.zeros((m + 1,), jnp.int32)))
  return jnp.full((n + 1,), -1, jnp.int32).at[p[1:]].set(jnp.arange(m, dtype=jnp.int32))[1:]


def _assign(cost: Array) -> Array:
  """(n, m) -> (n,) column per row, -1 for the rows left out when n > m."""
  n, m = cost.shape
  if n <= m:
    return _hungarian(cost)
  row_of_col = _hungarian(cost.T)                                      # (m,) rows in [0, n)
  return jnp.full((n,), -1, jnp.int32).at[row_of_col].set(jnp.arange(m, dtype=jnp.int32))


def hard_matching(cost: Array, *, maximize: bool = False) -> Array:
  """Exact minimum-cost one-to-one matching (the linear assignment problem), jittable and batched.

      min_sigma sum_i C_{i, sigma(i)}  over injective sigma: rows -> columns (n <= m), or over
      injective maps of the columns when n > m (then n - m rows stay unmatched),

  solved exactly by the Hungarian algorithm (Kuhn 1955; shortest augmenting paths with potentials,
  Jonker & Volgenant 1987): the same solution as scipy.optimize.linear_sum_assignment, in
  O(min(n,m)^2 max(n,m)) time. A non-finite cost (inf, nan) marks a forbidden pair: it is replaced
  by a cost larger than any matching of finite costs, so it is used only when no matching avoids
  it (where scipy raises "cost matrix is infeasible").

  From a soft alignment: a square entropic plan P = exp((f_i + g_j - C_ij) / eps) (sinkhorn)
  rounds to hard_matching(-log P), which is the optimal matching of C itself for any eps, because
  the potentials add sum_i f_i + sum_j g_j to every perfect matching (for n != m the unmatched
  columns' g_j make a difference); hard_matching(P, maximize=True) keeps the most mass of P.

  Args:
    cost: (..., n, m) costs (scores with maximize=True), any leading batch axes.
    maximize: find the maximum-score matching instead.

  Returns:
    (..., n) int32: the column matched to each row, -1 for unmatched rows (only when n > m).
  """
  cost = as_cost(cost, "hard_matching")
  cost = -cost if maximize else cost
  finite = jnp.isfinite(cost)
  largest = jnp.max(jnp.where(finite, jnp.abs(cost), 0), axis=(-2, -1), keepdims=True)
  forbidden = (2 * largest + 1) * (min(cost.shape[-2:]) + 1)       # > any finite matching's range
  return batched(_assign, 2, jnp.where(finite, cost, forbidden))


# ---------------------------------------------------------------------------------------- loss

def _cosine_cost(x: Array, y: Array) -> Array:
  """1 - cos(x_i, y_j): (..., n, d), (..., m, d) -> (..., n, m)."""
  return 1 - jnp.einsum("...nd,...md->...nm", l2_normalize(x), l2_normalize(y),
                       precision=jax.lax.Precision.HIGHEST)


def _mask_weights(mask, shape, dtype, name):
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.shape != shape:
    raise ValueError(f"ot_alignment_loss: {name} has shape {mask.shape}, expected {shape}")
  w = mask.astype(dtype)
  return w / jnp.maximum(jnp.sum(w, -1, keepdims=True), 1)


def ot_alignment_loss(x: Array, y: Array, *, mask_x: Array | None = None,
                      mask_y: Array | None = None, epsilon: float = 0.05, num_iters: int = 50,
                      tau: float | None = None) -> Array:
  """Optimal-transport alignment loss between the elements of paired sets (e.g. the words and the
  image patches of matched image-caption pairs): UNITER's word-region alignment (Chen et al. 2020).

      C_ij = 1 - cos(x_i, y_j),   P = sinkhorn(C, a, b),   loss = mean over the batch of <P, C>,
  with a, b uniform over the unmasked elements. P is computed on stop_gradient(C) (as UNITER does):
  the gradient is then sum_ij P_ij dC_ij, which by Danskin's theorem is the exact gradient of the
  entropic OT value min_P <P, C> - eps H(P), without backpropagating through the iterations.

  Args:
    x: (B, n, d) elements of one modality (e.g. word embeddings).
    y: (B, m, d) elements of the other (e.g. patch embeddings).
    mask_x: (B, n) bool, True for real elements (padding False; every example needs at least
      one real element on each side); default all real.
    mask_y: (B, m) bool.
    epsilon, num_iters, tau: Sinkhorn's regularisation, iterations and marginal relaxation (tau
      None: balanced; a float relaxes both marginals).

  Returns:
    scalar loss in [0, 2] (float32, float64 for float64 inputs).
  """
  if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
    raise ValueError(f"ot_alignment_loss expects x (B, n, d) and y (B, m, d) with the same B and "
                     f"d, got shapes {x.shape} and {y.shape}")
  dtype = at_least_float32(x, y)
  cost = _cosine_cost(x.astype(dtype), y.astype(dtype))                # (B, n, m)
  a = _mask_weights(mask_x, x.shape[:2], dtype, "mask_x")
  b = _mask_weights(mask_y, y.shape[:2], dtype, "mask_y")
  plan = sinkhorn(jax.lax.stop_gradient(cost), a, b, epsilon=epsilon, num_iters=num_iters,
                  tau_a=tau, tau_b=tau).plan
  return jnp.mean(jnp.sum(jax.lax.stop_gradient(plan) * cost, axis=(-2, -1)))
