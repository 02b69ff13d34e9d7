"""EMAP: does a multimodal model use cross-modal interactions? (Hessel & Lee 2020, "Does my
multimodal model learn cross-modal interactions? It's harder to tell than you might think!")

For a model f(a, b) (logits) and an evaluation set {(a_i, b_i)}, i = 1..N, the empirical
multimodally-additive projection of f is

    f_hat(a_i, b_i) = 1/N sum_j f(a_i, b_j) + 1/N sum_j f(a_j, b_i) - 1/N^2 sum_{j,k} f(a_j, b_k),

the best additive approximation g(a) + h(b) of f on the empirical product distribution of the two
modalities (each logit projected separately). If the projection predicts as accurately as f, the
cross-modal interactions f may compute do not help on this task; an additive model is its own
projection. It costs N^2 evaluations of f, done here in (block, block) tiles of pairs in a lax
loop, so only O(N) values are held.

  emap_projection   the projection from a full (N, N, ...) table of pair logits
  emap              the projection from a model, tile by tile (pure, jittable), with f's own logits
  emap_accuracy     model accuracy vs EMAP accuracy on labelled data (host convenience)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax._dtypes import at_least_float32

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


class EmapOutput(NamedTuple):
  """What emap returns: the additive projection of a model's logits, beside the logits."""
  projection: jax.Array
  """(N, ...) f_hat(a_i, b_i), the empirical multimodally-additive projection."""
  logits: jax.Array
  """(N, ...) f(a_i, b_i), the model's own logits."""


def emap_projection(pair_logits: Array) -> Array:
  """EMAP from a table of logits over all pairs: (N, N, ...) with [i, j] = f(a_i, b_j) -> (N, ...),
  row mean + column mean - grand mean on the diagonal (Hessel & Lee 2020, Eq. 2 and the worked
  example of their appendix)."""
  pair_logits = jnp.asarray(pair_logits)
  if pair_logits.ndim < 2 or pair_logits.shape[0] != pair_logits.shape[1]:
    raise ValueError(f"emap_projection expects pair logits (N, N, ...) with [i, j] = f(a_i, b_j), "
                     f"got shape {pair_logits.shape}")
  pair_logits = pair_logits.astype(at_least_float32(pair_logits))
  rows = jnp.mean(pair_logits, axis=1)                                # mean_j f(a_i, b_j)
  cols = jnp.mean(pair_logits, axis=0)                                # mean_j f(a_j, b_i)
  return rows + cols - jnp.mean(rows, axis=0)


def _leading(tree) -> int:
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(tree)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"emap: every array of a modality needs the same leading (example) axis, got "
                     f"shapes {[jnp.shape(x) for x in jax.tree.leaves(tree)]}")
  return sizes.pop()


def emap(f: Callable, a, b, *, block_size: int = 32) -> EmapOutput:
  """EMAP of a model on an evaluation set, without materialising the N x N table.

  f(a_batch, b_batch) -> logits (P, ...) for P paired inputs (pytrees of arrays with a leading
  batch axis). The N x N pairs are visited in tiles of block_size x block_size (f sees
  block_size^2 pairs per call, in a lax.fori_loop over the tiles); row sums, column sums and the
  diagonal are accumulated. N need not divide by block_size (the last tiles are padded and masked).
  For a model that encodes each modality and then fuses, pass the encodings as a and b and the
  fusion head as f: the towers then run N times, not N^2.

  Args:
    f: the model, (a_batch, b_batch) -> (P, ...) logits; jittable.
    a: first modality, a pytree of (N, ...) arrays.
    b: second modality, a pytree of (N, ...) arrays, example i paired with a's example i.
    block_size: tile side.

  Returns:
    EmapOutput(projection (N, ...), logits (N, ...)), in float32 (or wider).
  """
  n = _leading(a)
  if _leading(b) != n:
    raise ValueError(f"emap: a has {n} examples and b has {_leading(b)}; they must be paired")
  if not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f"emap: block_size must be an int >= 1, got {block_size!r}")
  s = min(block_size, n)
  tiles = -(-n // s)
  pad = tiles * s - n
  a_pad, b_pad = (jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, 0)]), t)
                  for t in (a, b))

  def block(tree, i):
    """Examples i*s .. i*s + s - 1 of every array of a padded modality."""
    return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, i * s, s), tree)

  def add(x, v, k):
    """x with v added to rows k*s .. k*s + s - 1."""
    return jax.lax.dynamic_update_slice_in_dim(x, jax.lax.dynamic_slice_in_dim(x, k * s, s) + v,
                                               k * s, 0)

  def pair_logits(i, j):
    """[r, c] = f(a_{i*s+r}, b_{j*s+c}), (s, s, ...), 0 where r or c is padding."""
    ab = jax.tree.map(lambda x: jnp.repeat(x, s, axis=0), block(a_pad, i))     # a_r for every c
    bb = jax.tree.map(lambda x: jnp.tile(x, (s,) + (1,) * (x.ndim - 1)), block(b_pad, j))
    out = f(ab, bb)
    out = out.reshape((s, s) + out.shape[1:])
    out = out.astype(at_least_float32(out))
    valid = ((i * s + jnp.arange(s)) < n)[:, None] & ((j * s + jnp.arange(s)) < n)[None, :]
    return jnp.where(valid.reshape(valid.shape + (1,) * (out.ndim - 2)), out, 0)

  probe = jax.eval_shape(pair_logits, 0, 0)
  acc = jnp.zeros((tiles * s,) + probe.shape[2:], probe.dtype)

  def tile(t, state):
    rows, cols, diag = state
    i, j = t // tiles, t % tiles
    out = pair_logits(i, j)                                           # (s, s, ...)
    rows = add(rows, jnp.sum(out, 1), i)
    cols = add(cols, jnp.sum(out, 0), j)
    diag = add(diag, jnp.where(i == j, out[jnp.arange(s), jnp.arange(s)], 0), i)
    return rows, cols, diag

  rows, cols, diag = jax.lax.fori_loop(0, tiles * tiles, tile, (acc, acc, acc))
  rows, cols, diag = rows[:n] / n, cols[:n] / n, diag[:n]
  return EmapOutput(rows + cols - jnp.mean(rows, axis=0), diag)


def predictions(logits: Array) -> np.ndarray:
  """Class predictions of logits: argmax over the last axis for (N, C), logit > 0 for (N,)."""
  logits = np.asarray(logits)
  return (logits > 0).astype(np.int64) if logits.ndim == 1 else np.argmax(logits, -1)


def accuracy(logits: Array, labels: Array) -> float:
  """Accuracy of (N, C) logits (or (N,) binary logits) against (N,) int labels."""
  labels = np.asarray(labels)
  if labels.shape != np.shape(logits)[:1]:
    raise ValueError(f"labels have shape {labels.shape}, expected ({np.shape(logits)[0]},) like "
                     f"the logits {np.shape(logits)}")
  return float(np.mean(predictions(logits) == labels))


def emap_accuracy(f: Callable, a, b, labels: Array, *, block_size: int = 32) -> dict[str, float]:
  """Accuracy of the model and of its EMAP projection on (a, b, labels) (Hessel & Lee 2020, Table
  2): equal accuracies mean the cross-modal interactions of f do not help on this data.

  Returns:
    {'model_accuracy', 'emap_accuracy'} (and their difference, 'interaction_gain').
  """
  out = jax.jit(lambda a, b: emap(f, a, b, block_size=block_size))(a, b)
  model, projected = accuracy(out.logits, labels), accuracy(out.projection, labels)
  return {"model_accuracy": model, "emap_accuracy": projected,
          "interaction_gain": model - projected}
