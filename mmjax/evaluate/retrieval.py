"""Image-text retrieval: recall@k, median and mean rank, with several captions per image.

Captions are grouped by image: caption j belongs to image text_to_image[j], and every image needs at
least one caption. Scores are dot products (cosines for unit-norm embeddings).

  image -> text   the rank of image i is that of its best-scoring caption among the other images'
                  captions (the usual protocol with 5 captions per image, as on COCO)
  text -> image   the rank of caption j is that of its own image among all images

Ranks are 0-based counts of wrong candidates scoring *at least* as high as the correct one, so a tie
counts against the model (a constant model gets rank N - 1, not 0). recall@k = mean(rank < k);
median and mean rank are reported 1-based, as in the papers (MedR, MnR).

Memory: the N x M similarity matrix never exists. Queries go through in chunks of `chunk_size`
rows, replicated, against candidates sharded over every device of the mesh; each device scores its
(chunk, M / devices) block and the best-correct score and the counts are combined with pmax / psum.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

_PAD_GROUP = -1   # candidates added to fill the last shard: never correct, never counted
_PAD_QUERY = -2   # queries added to fill the last chunk: results dropped


def _local_ranks(queries, query_groups, candidates, candidate_groups, axes):
  """Per device: (c, E) queries against its (m, E) candidates -> (c,) global counts."""
  scores = jnp.einsum("ce,me->cm", queries, candidates, precision=jax.lax.Precision.HIGHEST)
  correct = candidate_groups[None, :] == query_groups[:, None]                    # (c, m)
  best = jnp.max(jnp.where(correct, scores, -jnp.inf), axis=1)
  if axes:
    best = jax.lax.pmax(best, axes)
  valid = (candidate_groups >= 0)[None, :] & ~correct
  count = jnp.sum(valid & (scores >= best[:, None]), axis=1, dtype=jnp.int32)
  return jax.lax.psum(count, axes) if axes else count


@functools.lru_cache(maxsize=16)
def _rank_fn(mesh: Mesh | None):
  if mesh is None:
    return jax.jit(functools.partial(_local_ranks, axes=()))
  axes = tuple(mesh.axis_names)
  fn = functools.partial(_local_ranks, axes=axes)
  rows = P(axes)
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(), rows, rows), out_specs=P(),
                               axis_names=set(axes)))


def group_ranks(queries, query_groups, candidates, candidate_groups, *, mesh: Mesh | None = None,
                chunk_size: int = 1024) -> np.ndarray:
  """(Q,) 0-based ranks: for query q, the number of candidates outside its group (candidate_groups
  != query_groups[q]) scoring >= its best in-group candidate.

  queries (Q, E), candidates (M, E), groups int (Q,) and (M,) >= 0. mesh: shard candidates over all
  its devices (None: one device). Memory per device: chunk_size * M / devices scores.
  """
  queries = np.asarray(queries, np.float32)
  candidates = np.asarray(candidates, np.float32)
  query_groups = np.asarray(query_groups, np.int32)
  candidate_groups = np.asarray(candidate_groups, np.int32)
  shards = 1 if mesh is None else mesh.size
  pad = -len(candidates) % shards
  candidates = np.concatenate([candidates, np.zeros((pad, candidates.shape[1]), np.float32)])
  candidate_groups = np.concatenate([candidate_groups, np.full(pad, _PAD_GROUP, np.int32)])
  if mesh is not None:
    rows = NamedSharding(mesh, P(tuple(mesh.axis_names)))
    candidates = jax.device_put(candidates, rows)
    candidate_groups = jax.device_put(candidate_groups, rows)
  fn = _rank_fn(mesh)
  chunk = max(1, min(chunk_size, len(queries)))
  out = []
  for start in range(0, len(queries), chunk):
    q, g = queries[start:start + chunk], query_groups[start:start + chunk]
    n = len(q)
    if n < chunk:   # one compiled shape for every chunk
      q = np.concatenate([q, np.zeros((chunk - n, q.shape[1]), np.float32)])
      g = np.concatenate([g, np.full(chunk - n, _PAD_QUERY, np.int32)])
    out.append(np.asarray(fn(q, g, candidates, candidate_groups))[:n])
  return np.concatenate(out) if out else np.zeros((0,), np.int32)


def _check(image_emb, text_emb, text_to_image) -> np.ndarray:
  image_emb, text_emb = np.asarray(image_emb), np.asarray(text_emb)
  text_to_image = np.asarray(text_to_image)
  if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
    raise ValueError(f"expected image embeddings (N, E) and text embeddings (M, E), got "
                     f"{image_emb.shape} and {text_emb.shape}")
  if text_to_image.shape != (len(text_emb),):
    raise ValueError(f"text_to_image must have one image index per caption: shape "
                     f"({len(text_emb)},), got {text_to_image.shape}")
  if text_to_image.size and (text_to_image.min() < 0 or text_to_image.max() >= len(image_emb)):
    raise ValueError(f"text_to_image must index the {len(image_emb)} images, got values "
                     f"{text_to_image.min()}..{text_to_image.max()}")
  missing = np.setdiff1d(np.arange(len(image_emb)), text_to_image)
  if missing.size:
    raise ValueError(f"{missing.size} image(s) have no caption (e.g. image {missing[0]}): every "
                     "image needs at least one for image -> text retrieval")
  return text_to_image


def retrieval_ranks(image_emb, text_emb, text_to_image=None, *, mesh: Mesh | None = None,
                    chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """(image -> text ranks (N,), text -> image ranks (M,)), 0-based, ties against.

  image_emb (N, E), text_emb (M, E); text_to_image (M,) int: the image of each caption (default
  arange(N): one caption per image).
  """
  if text_to_image is None:
    text_to_image = np.arange(len(image_emb))
  text_to_image = _check(image_emb, text_emb, text_to_image)
  images = np.arange(len(image_emb))
  i2t = group_ranks(image_emb, images, text_emb, text_to_image, mesh=mesh, chunk_size=chunk_size)
  t2i = group_ranks(text_emb, text_to_image, image_emb, images, mesh=mesh, chunk_size=chunk_size)
  return i2t, t2i


def rank_metrics(ranks, prefix: str, ks=(1, 5, 10)) -> dict[str, float]:
  """{prefix + 'recall@k': mean(ranks < k), 'median_rank' and 'mean_rank' (1-based)}."""
  ranks = np.asarray(ranks)
  out = {f"{prefix}recall@{k}": float(np.mean(ranks < k)) for k in ks}
  out[f"{prefix}median_rank"] = float(np.median(ranks + 1))
  out[f"{prefix}mean_rank"] = float(np.mean(ranks + 1))
  return out


def retrieval_metrics(image_emb, text_emb, text_to_image=None, *, mesh: Mesh | None = None,
                      chunk_size: int = 1024, ks=(1, 5, 10)) -> dict[str, float]:
  """i2t_recall@k, t2i_recall@k, i2t/t2i median_rank and mean_rank (see retrieval_ranks)."""
  i2t, t2i = retrieval_ranks(image_emb, text_emb, text_to_image, mesh=mesh, chunk_size=chunk_size)
  return {**rank_metrics(i2t, "i2t_", ks), **rank_metrics(t2i, "t2i_", ks)}


def top_k(queries, candidates, k: int) -> np.ndarray:
  """(Q, k) indices of the k best-scoring candidates of each query, best first (for examples)."""
  scores = np.asarray(queries, np.float32) @ np.asarray(candidates, np.float32).T
  return np.argsort(-scores, axis=1, kind="stable")[:, :k]
