"""Embedding arithmetic (Kiros et al. 2014): image of a red circle - "red" + "blue" ~ a blue circle.

For every gallery image i, every attribute a (e.g. colour) and every other value v' of it:

    query = normalise(image_emb[i] - word_emb[a][attrs[i, a]] + word_emb[a][v'])

retrieves its nearest gallery image j != i by cosine. A hit: j has value v' for attribute a and
the same values as i for every other attribute. Swaps whose target combination is absent from the
gallery (no hit possible) are skipped. The hit rate is the mean over the remaining swaps.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _normalise(x):
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@jax.jit
def _nearest(queries, exclude, gallery):
  """(q,) index of the best gallery row for each query, gallery row exclude[q] left out."""
  scores = jnp.einsum("qe,ne->qn", queries, gallery, precision=jax.lax.Precision.HIGHEST)
  scores = jnp.where(jnp.arange(gallery.shape[0])[None, :] == exclude[:, None], -jnp.inf, scores)
  return jnp.argmax(scores, axis=1)


def swap_queries(image_emb, attrs, word_emb: Sequence, attribute: int):
  """(queries (Q, E) unit-norm, source image (Q,), target value (Q,)) of every swap of one
  attribute whose target combination occurs in the gallery."""
  image_emb, attrs = _normalise(image_emb), np.asarray(attrs)
  words = np.asarray(word_emb[attribute], np.float32)                   # (V, E)
  combos = {tuple(row) for row in attrs}
  queries, sources, targets = [], [], []
  for i, row in enumerate(attrs):
    for v in range(len(words)):
      target = (*row[:attribute], v, *row[attribute + 1:])
      if v != row[attribute] and target in combos:
        queries.append(image_emb[i] - words[row[attribute]] + words[v])
        sources.append(i)
        targets.append(v)
  e = image_emb.shape[1]
  return (_normalise(np.reshape(queries, (-1, e))), np.asarray(sources, np.int32),
          np.asarray(targets, np.int32))


def attribute_swap_hits(image_emb, attrs, word_emb: Sequence, attribute: int, *,
                        chunk_size: int = 4096) -> np.ndarray:
  """(Q,) bool hits of every swap of `attribute` (see the module docstring).

  image_emb (N, E); attrs (N, A) int attribute values of each image; word_emb[a] (V_a, E) the text
  embedding of each value's word (e.g. of "red", "green", ...).
  """
  attrs = np.asarray(attrs)
  if attrs.ndim != 2 or len(attrs) != len(image_emb):
    raise ValueError(f"attrs must be (N, A) with N = {len(image_emb)} images, got {attrs.shape}")
  queries, sources, targets = swap_queries(image_emb, attrs, word_emb, attribute)
  gallery = _normalise(image_emb)
  nearest = np.concatenate([np.asarray(_nearest(queries[s:s + chunk_size],
                                                sources[s:s + chunk_size], gallery))
                            for s in range(0, len(queries), chunk_size)] or [np.zeros(0, int)])
  want = attrs[sources].copy()
  want[:, attribute] = targets
  return np.all(attrs[nearest] == want, axis=1)


def arithmetic_metrics(image_emb, attrs, word_emb: Sequence, names: Sequence[str]
                       ) -> dict[str, float]:
  """{'{name}_hit': hit rate of the swaps of each attribute, 'hit': over all swaps}."""
  hits = {name: attribute_swap_hits(image_emb, attrs, word_emb, a) for a, name in enumerate(names)}
  out = {f"{name}_hit": float(np.mean(h)) if h.size else float("nan") for name, h in hits.items()}
  everything = np.concatenate(list(hits.values()))
  out["hit"] = float(np.mean(everything)) if everything.size else float("nan")
  return out
