"""Discretising continuous signals, so that they can be aligned with discrete elements.

  change_points   optimal segmentation into pieces of constant mean: a fixed number of segments
                  (Bellman's dynamic programme; Bai & Perron 2003) or a penalty per segment
                  (optimal partitioning, Jackson et al. 2005, the problem PELT solves, Killick et
                  al. 2012); survey: Truong et al. 2020, "Selective review of offline change point
                  detection methods"
  segment_means   one vector per segment: the discrete elements of a segmented signal
  kmeans          Lloyd's k-means (Lloyd 1982) from k-means++ seeds (Arthur & Vassilvitskii 2007)
  quantize        nearest-centroid token of every frame (vector quantisation into a codebook)

A signal is (n, d) (n frames of d features; (n,) is read as d = 1), with optional leading batch axes
for change_points and quantize. Everything jits: loops are lax loops and outputs have static shapes
(per-frame labels rather than lists of boundaries).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32
from mmjax.align._utils import batched, check_positive
from mmjax.similarity import squared_distances

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


def _as_signal(x, where: str, *, batch: bool = True) -> Array:
  x = jnp.asarray(x)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim < 2 or (not batch and x.ndim != 2) or x.shape[-2] < 1:
    want = "(..., n, d) or (n,)" if batch else "(n, d) or (n,)"
    raise ValueError(f"{where} expects a signal {want} with n >= 1, got shape {x.shape}")
  return x.astype(at_least_float32(x))


def segment_costs(x: Array) -> Array:
  """Cost of fitting each segment [s, t) by its mean: (n, d) -> (n + 1, n + 1),
  S[s, t] = sum_{s <= u < t} ||x_u - mean(x_s..x_{t-1})||^2 for s < t, inf for s >= t,
  from cumulative sums of the centred signal (S does not change; the sums stay small, which keeps
  float32 accurate) in O(1) per entry and O(n^2 d) memory."""
  n = x.shape[0]
  x = x - jnp.mean(x, axis=0)
  zero = jnp.zeros((1,) + x.shape[1:], x.dtype)
  c1 = jnp.concatenate([zero, jnp.cumsum(x, 0)])                      # (n + 1, d)
  c2 = jnp.concatenate([zero[:, 0], jnp.cumsum(jnp.sum(x * x, -1))])  # (n + 1,)
  idx = jnp.arange(n + 1)
  length = idx[None, :] - idx[:, None]                                # t - s
  sums = c1[None, :, :] - c1[:, None, :]                              # (n + 1, n + 1, d)
  cost = (c2[None, :] - c2[:, None]) - jnp.sum(sums * sums, -1) / jnp.maximum(length, 1)
  return jnp.where(length > 0, jnp.maximum(cost, 0), jnp.inf)


def _labels_from_starts(starts: Array) -> Array:
  """(n,) bool, True where a segment starts (index 0 excluded) -> (n,) segment index."""
  return jnp.cumsum(starts.astype(jnp.int32))


def _fixed_number(x: Array, k: int) -> Array:
  """Labels of the optimal split into exactly k segments: F_k(t) = min_s F_{k-1}(s) + S[s, t]."""
  n = x.shape[0]
  s = segment_costs(x)                                                # (n + 1, n + 1)
  first = s[0]                                                        # F_1(t)

  def layer(f, _):
    total = f[:, None] + s                                            # (s, t)
    return jnp.min(total, 0), jnp.argmin(total, 0)

  _, args = jax.lax.scan(layer, first, None, length=k - 1)            # (k - 1, n + 1)

  def back(t, arg):
    start = arg[t]
    return start, start

  _, starts = jax.lax.scan(back, jnp.asarray(n), args, reverse=True)  # (k - 1,) boundaries
  return _labels_from_starts(jnp.zeros((n + 1,), bool).at[starts].set(True)[:n])


def _penalised(x: Array, penalty) -> Array:
  """Labels of the segmentation minimising sum of segment costs + penalty * number of segments."""
  n = x.shape[0]
  s = segment_costs(x)
  f0 = jnp.full((n + 1,), jnp.inf, x.dtype).at[0].set(-penalty)

  def grow(f, t):
    total = f + s[:, t] + penalty                                     # (n + 1,) over s
    return f.at[t].set(jnp.min(total)), jnp.argmin(total)

  _, prev = jax.lax.scan(grow, f0, jnp.arange(1, n + 1))  # prev[t-1]: start of the last segment

  def back(t, _):
    start = jnp.where(t > 0, prev[jnp.maximum(t, 1) - 1], 0)
    return start, start

  _, starts = jax.lax.scan(back, jnp.asarray(n), None, length=n)
  return _labels_from_starts(jnp.zeros((n + 1,), bool).at[starts].set(True)[:n].at[0].set(False))


def change_points(x: Array, *, num_segments: int | None = None,
                  penalty: float | None = None) -> Array:
  """Optimal segmentation of a signal into pieces of constant mean (least squares).

  With S(s, t) the squared deviation of x_s..x_{t-1} from their mean (Gaussian mean shifts),
      num_segments=K:  min over 0 = t_0 < t_1 < ... < t_K = n of sum_k S(t_{k-1}, t_k),
                       by the dynamic programme F_k(t) = min_s F_{k-1}(s) + S(s, t), O(K n^2);
      penalty=beta:    min over any number of segments of sum_k S(t_{k-1}, t_k) + beta K,
                       by optimal partitioning F(t) = min_s F(s) + S(s, t) + beta, O(n^2) (PELT
                       finds the same optimum faster by pruning, but not with static shapes).
  Both are exact. A BIC-like choice for noise variance sigma^2 is beta = 2 sigma^2 d log n.

  Args:
    x: (..., n, d) or (n,) signal(s).
    num_segments: K, 1 <= K <= n (static); exactly one of num_segments and penalty.
    penalty: beta > 0, the cost of a segment.

  Returns:
    (..., n) int32 segment index of every frame, 0, 1, ... in time order.
  """
  x = _as_signal(x, "change_points")
  n = x.shape[-2]
  if (num_segments is None) == (penalty is None):
    raise ValueError(f"change_points needs exactly one of num_segments and penalty, got "
                     f"num_segments={num_segments!r}, penalty={penalty!r}")
  if num_segments is not None:
    if not isinstance(num_segments, int) or not 1 <= num_segments <= n:
      raise ValueError(f"change_points: num_segments must be an int in [1, n={n}] (signal shape "
                       f"{x.shape}), got {num_segments!r}")
    return batched(lambda s: _fixed_number(s, num_segments), 2, x)
  check_positive(penalty, "penalty", "change_points")
  return batched(lambda s: _penalised(s, jnp.asarray(penalty, s.dtype)), 2, x)


def segment_means(x: Array, labels: Array, num_segments: int) -> Array:
  """Mean of the frames of each segment: (n, d), (n,) labels in [0, K) -> (K, d); 0 for a segment
  with no frame. With change_points, turns a signal into K discrete elements to align."""
  x = _as_signal(x, "segment_means", batch=False)
  labels = jnp.asarray(labels)
  if labels.shape != x.shape[:1]:
    raise ValueError(f"segment_means: labels have shape {labels.shape}, expected ({x.shape[0]},) "
                     f"like the signal {x.shape}")
  sums = jax.ops.segment_sum(x, labels, num_segments)
  counts = jax.ops.segment_sum(jnp.ones_like(x[:, :1]), labels, num_segments)
  return sums / jnp.maximum(counts, 1)


# ---------------------------------------------------------------------------------------- k-means

class KMeansOutput(NamedTuple):
  """What kmeans returns: the codebook, each point's code and the clustering cost."""
  centroids: jax.Array
  """(k, d) cluster centres."""
  labels: jax.Array
  """(n,) int32 index of each point's nearest centroid."""
  inertia: jax.Array
  """() sum of squared distances of the points to their nearest centroid."""


def kmeans_plus_plus(x: Array, k: int, key: Array) -> Array:
  """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre uniformly, each next one
  with probability proportional to the squared distance to the nearest chosen centre.
  (n, d) -> (k, d)."""
  x = _as_signal(x, "kmeans_plus_plus", batch=False)
  n = x.shape[0]
  keys = jax.random.split(key, k)
  first = x[jax.random.randint(keys[0], (), 0, n)]
  centres = jnp.zeros((k,) + x.shape[1:], x.dtype).at[0].set(first)
  nearest = squared_distances(x, first[None])[:, 0]

  def add(j, state):
    centres, nearest = state
    p = nearest / jnp.maximum(jnp.sum(nearest), jnp.finfo(x.dtype).tiny)
    p = jnp.where(jnp.sum(nearest) > 0, p, 1.0 / n)                   # all points already chosen
    c = x[jax.random.choice(keys[j], n, p=p)]
    return centres.at[j].set(c), jnp.minimum(nearest, squared_distances(x, c[None])[:, 0])

  centres, _ = jax.lax.fori_loop(1, k, add, (centres, nearest))
  return centres


def kmeans(x: Array, k: int, *, key: Array | None = None, init: Array | None = None,
           num_iters: int = 50) -> KMeansOutput:
  """Lloyd's k-means (Lloyd 1982): alternate nearest-centroid assignment and centroid = mean of its
  points, num_iters times, from k-means++ seeds (or `init`). A centroid that loses all its points
  stays where it is. Jittable (k and num_iters static).

  Args:
    x: (n, d) or (n,) points (e.g. the frames of a signal).
    k: number of clusters, 1 <= k <= n.
    key: PRNG key for the k-means++ seeding (needed unless init is given).
    init: (k, d) initial centroids instead of k-means++.
    num_iters: Lloyd iterations.

  Returns:
    KMeansOutput(centroids (k, d), labels (n,), inertia ()).
  """
  x = _as_signal(x, "kmeans", batch=False)
  n, d = x.shape
  if not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"kmeans: k must be an int in [1, n={n}], got {k!r}")
  if init is None:
    if key is None:
      raise ValueError("kmeans needs a PRNG key for k-means++ seeding, or init centroids")
    init = kmeans_plus_plus(x, k, key)
  init = jnp.asarray(init, x.dtype)
  if init.shape != (k, d):
    raise ValueError(f"kmeans: init has shape {init.shape}, expected (k, d) = {(k, d)}")

  def lloyd(_, c):
    labels = jnp.argmin(squared_distances(x, c), 1)
    sums = jax.ops.segment_sum(x, labels, k)
    counts = jax.ops.segment_sum(jnp.ones((n,), x.dtype), labels, k)[:, None]
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1), c)

  c = jax.lax.fori_loop(0, num_iters, lloyd, init)
  dist = squared_distances(x, c)
  return KMeansOutput(c, jnp.argmin(dist, 1).astype(jnp.int32), jnp.sum(jnp.min(dist, 1)))


def quantize(x: Array, centroids: Array) -> Array:
  """Token of every frame: the index of its nearest centroid. (..., n, d), (k, d) -> (..., n)."""
  x = _as_signal(x, "quantize")
  centroids = jnp.asarray(centroids, x.dtype)
  if centroids.ndim != 2 or centroids.shape[1] != x.shape[-1]:
    raise ValueError(f"quantize: centroids must be (k, d) with d = {x.shape[-1]} like the signal "
                     f"{x.shape}, got {centroids.shape}")
  return jnp.argmin(squared_distances(x, centroids), -1).astype(jnp.int32)   # (..., n, k) -> (..., n)
