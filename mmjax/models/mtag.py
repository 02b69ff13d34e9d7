"""MTAG: a modal-temporal attention graph over unaligned multimodal sequences (Yang et al. 2021,
"MTAG: Modal-Temporal Attention Graph for Unaligned Human Multimodal Language Sequences", NAACL,
https://arxiv.org/abs/2010.11985).

  num_edge_types(M)        3 * M * M: (source modality, target modality, past / present / future)
  graph_nodes(xs, lengths, modalities)
                           streams {name: (B, T, D)} -> one padded node set: x (B, N, D), modality
                           ids (N,), normalised times (B, N), node mask (B, N)
  edge_types(modality_ids, times, mask)
                           (B, N, N) type of every edge source j -> target i, -1 where there is none
  prune_top_k(attention, adjacency, k)
                           keeps the k (or a ratio of the) strongest incoming edges of every node
  masked_softmax(logits, mask)
                           softmax over the allowed entries; a row with none of them gives zeros
  ModalTemporalAttention   multi-head graph attention: per-modality projections, per-edge-type
                           attention vectors and biases. (B, N, D) -> (B, N, D), (B, H, N, N)
  MTAGBlock                pre-LN: x + attention(LN(x)), then x + Mlp(LN(x))
  MTAGGraph                blocks with edge pruning between them, then a masked per-modality mean
                           readout: nodes (B, N, D) -> (B, N, D), (B, out_dim)
  MTAG                     streams {name: (B, T, D)} + lengths {name: (B,)} -> (B, out_dim)

The graph is dense and batched (the graphs here hold ~100 nodes): every (modality, time step) pair
is a node, every pair of real nodes is joined by an edge in both directions (self-loops included,
as in the authors' code), and an edge carries a type from its modalities and from the relative
position of its ends on a common time axis. Attention logits of absent edges are masked, so padded
nodes neither send nor receive anything.

Where this departs from the paper: (1) "present" is a tolerance on normalised times (see
edge_types) instead of the authors' pseudo-alignment windows; (2) with content=True (default) the
logits also hold a scaled query-key product, because the GAT score of the paper ranks the sources
of one edge type in the same order for every target and so cannot match co-occurring content;
content=False gives the paper's score; (3) blocks are pre-LN with an optional feed-forward layer
(mlp_dim=0 drops it); (4) pruning keeps the top-k incoming edges of each node (the paper keeps a
fraction of all edges of the graph), so no node loses all its edges and the readout keeps every
real node; (5) the readout is a per-modality masked mean, concatenated and projected.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.models.common import Dtype, LayerNorm, logical
from mmjax.models.transformer import Mlp

PAST, PRESENT, FUTURE = 0, 1, 2
"""Temporal relations of an edge source j -> target i: t_j before, at, or after t_i."""

_SLACK = 1e-6  # absolute slack on the "present" tolerance, so float rounding decides no boundary


def num_edge_types(num_modalities: int) -> int:
  """3 * M * M edge types: (source modality, target modality, temporal relation)."""
  return 3 * num_modalities * num_modalities


def graph_nodes(xs: Mapping[str, jax.Array], lengths: Mapping[str, jax.Array] | None,
                modalities: Sequence[str]):
  """Concatenates the streams, in the order `modalities`, into one padded node set.

  xs[name] (B, T_name, D); lengths[name] (B,) counts the real steps at the start of each row
  (0 <= length <= T_name; a missing name or lengths=None means all real). The node of step t of a
  stream of length L sits at the normalised time (t + 0.5) / L, the centre of its interval on
  [0, 1]. Padded nodes are zeroed, so any garbage beyond the lengths (even NaN) cannot leak.

  Returns x (B, N, D) with N = sum of the T_name, modality_ids (N,) int32 numpy (static),
  times (B, N) float32, mask (B, N) bool.
  """
  parts, ids, times, mask = [], [], [], []
  for m, name in enumerate(modalities):
    x = xs[name]
    b, t = x.shape[:2]
    n = None if lengths is None else lengths.get(name)
    n = jnp.full((b,), t, jnp.int32) if n is None else jnp.asarray(n, jnp.int32)
    pos = jnp.arange(t, dtype=jnp.float32)
    valid = pos < n[:, None]                                        # (B, T)
    times.append((pos + 0.5) / jnp.maximum(n, 1)[:, None].astype(jnp.float32))
    ids.append(np.full((t,), m, np.int32))
    mask.append(valid)
    parts.append(jnp.where(valid[..., None], x, jnp.zeros((), x.dtype)))
  return (jnp.concatenate(parts, axis=1), np.concatenate(ids), jnp.concatenate(times, axis=1),
          jnp.concatenate(mask, axis=1))


def edge_types(modality_ids, times, mask, *, num_modalities: int | None = None, steps=None):
  """The type of every edge source j -> target i of a batch of graphs, -1 where there is no edge.

  modality_ids (N,) or (B, N) ints in [0, M); times (B, N) normalised times; mask (B, N) real nodes.
  Every pair of real nodes (i, j) is an edge, i == j included; a padded node has none. Numbering:

      type[b, i, j] = 3 * (M * m_j + m_i) + r,   r = PAST (0), PRESENT (1) or FUTURE (2)

  with m_j the source's and m_i the target's modality. r is PRESENT when
  |t_j - t_i| <= max(s_i, s_j) / 2 (half a step of the coarser of the two streams, plus 1e-6 of
  slack for rounding), PAST when t_j is earlier than that and FUTURE when later. s_i, a node's step,
  defaults to 1 / (number of real nodes of its modality in that row), the spacing graph_nodes
  gives; pass steps (B, N) otherwise. So within a stream only the self-loop is PRESENT, and across
  streams a node is PRESENT with the coarse node whose interval holds it (with both at a boundary).

  num_modalities: M; needed when modality_ids is traced, else read from them.
  Returns (B, N, N) int32, indexed [batch, target, source].
  """
  if num_modalities is None:
    num_modalities = int(np.max(np.asarray(modality_ids))) + 1
  ids = jnp.broadcast_to(jnp.asarray(modality_ids, jnp.int32), mask.shape)      # (B, N)
  times = jnp.asarray(times, jnp.float32)
  if steps is None:
    count = jnp.sum(jax.nn.one_hot(ids, num_modalities) * mask[..., None], axis=1)  # (B, M)
    steps = 1.0 / jnp.maximum(jnp.take_along_axis(count, ids, axis=1), 1.0)    # (B, N)
  dt = times[:, None, :] - times[:, :, None]                        # (B, N, N): t_j - t_i
  tol = 0.5 * jnp.maximum(steps[:, :, None], steps[:, None, :]) + _SLACK
  rel = jnp.where(dt < -tol, PAST, jnp.where(dt > tol, FUTURE, PRESENT))
  typ = 3 * (num_modalities * ids[:, None, :] + ids[:, :, None]) + rel
  return jnp.where(mask[:, :, None] & mask[:, None, :], typ, -1).astype(jnp.int32)


def _check_keep(keep, where: str) -> None:
  ok = (isinstance(keep, (int, np.integer)) and not isinstance(keep, bool) and keep >= 1) or (
      isinstance(keep, float) and 0.0 < keep <= 1.0)
  if not ok:
    raise ValueError(f"{where}: keep_edges={keep!r} must be an int k >= 1 (top-k incoming edges "
                     "per node) or a float ratio in (0, 1] of each node's incoming edges")


def prune_top_k(attention, adjacency, k):
  """Keeps, for every target node, its k incoming edges of highest attention (MTAG's edge pruning).

  attention (B, H, N, N) weights [batch, head, target, source], averaged over the heads to score
  each edge; adjacency (B, N, N) bool. k: an int (keep min(k, in-degree) edges), or a float ratio
  in (0, 1] (keep ceil(ratio * in-degree), so at least one of any node that has an edge). Ties go
  to the lower source index. Absent edges stay absent.
  Returns the pruned adjacency (B, N, N) bool.
  """
  _check_keep(k, "prune_top_k")
  adjacency = jnp.asarray(adjacency, bool)
  score = jnp.mean(jnp.asarray(attention, jnp.float32), axis=1)    # (B, N, N)
  score = jnp.where(adjacency, score, -jnp.inf)
  order = jnp.argsort(-score, axis=-1, stable=True)                 # best first, ties by index
  rows = tuple(jnp.arange(m).reshape((m,) + (1,) * (order.ndim - 1 - a))
               for a, m in enumerate(order.shape[:-1]))
  place = jnp.broadcast_to(jnp.arange(order.shape[-1]), order.shape)
  rank = jnp.zeros_like(order).at[(*rows, order)].set(place)       # (B, N, N) place of each edge
  if isinstance(k, float):
    degree = jnp.sum(adjacency, axis=-1, keepdims=True)             # (B, N, 1)
    k = jnp.ceil(k * degree - 1e-6)
  return adjacency & (rank < k)


def masked_softmax(logits, mask):
  """Softmax over the last axis of logits restricted to mask; a row without any allowed entry
  gives all zeros (not NaN), and masked entries get no gradient."""
  logits = jnp.where(mask, logits, -jnp.inf)
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  e = jnp.where(mask, jnp.exp(logits - top), 0.0)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(total > 0, total, 1.0)


class ModalTemporalAttention(nn.Module):
  """MTAG's modal-temporal attention (Yang et al. 2021, Sec. 3.2), multi-head and dense.

  With v_j = W^v_{m_j} x_j (a projection per node modality, as the paper's node-type-specific
  Theta), per head and for an edge j -> i of type tau = type[i, j]:
      e_ij = LeakyReLU(a^src_tau . v_j + a^dst_tau . v_i) + b_tau  [+ q_i . k_j / sqrt(C)]
      alpha_ij = softmax_j(e_ij) over the edges into i,    y_i = W^o [sum_j alpha_ij v_j]_heads
  q_i = W^q_{m_i} x_i and k_j = W^k_{m_j} x_j (content=True only). A node without incoming edges
  gets y_i = W^o 0 + bias. The per-type parameters are small: 2 * H * C + H per edge type.

  __call__(x (B, N, D), modality_ids (N,) or (B, N), types (B, N, N), adjacency (B, N, N) bool)
  -> (y (B, N, D), attention (B, H, N, N) at least float32 [batch, head, target, source]).

  Attributes:
    num_modalities: M (edge types: 3 * M * M).
    num_heads: H; D must be divisible by it (C = D / H).
    content: add the query-key term (False: the paper's GAT score alone).
    negative_slope: of the LeakyReLU (0.2, as GAT).
  """
  num_modalities: int
  num_heads: int
  content: bool = True
  negative_slope: float = 0.2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, modality_ids, types, adjacency):
    b, n, d = x.shape
    nm, nh = self.num_modalities, self.num_heads
    if d % nh:
      raise ValueError(f"ModalTemporalAttention: width {d} is not divisible by "
                       f"num_heads={nh}")
    c, ne = d // nh, num_edge_types(nm)
    x = x.astype(self.dtype)
    onehot = jax.nn.one_hot(jnp.broadcast_to(modality_ids, (b, n)), nm, dtype=self.dtype)

    def proj(name):                                                 # (B, N, D) -> (B, N, H, C)
      w = self.param(name, logical(nn.initializers.lecun_normal(in_axis=1, out_axis=(2, 3),
                                                                batch_axis=0),
                                   "modality", "embed", "heads", "kv"), (nm, d, nh, c),
                     self.param_dtype)
      bias = self.param(f"{name}_bias", logical(nn.initializers.zeros, "modality", "heads", "kv"),
                        (nm, nh, c), self.param_dtype)
      y = jnp.einsum("bnd,mdhc->bnmhc", x, w.astype(self.dtype)) + bias.astype(self.dtype)
      return jnp.einsum("bnmhc,bnm->bnhc", y, onehot)               # each node's own modality

    att_init = logical(nn.initializers.normal(c ** -0.5), None, "heads", "kv")
    a_src = self.param("att_src", att_init, (ne, nh, c), self.param_dtype)  # (E, H, C)
    a_dst = self.param("att_dst", att_init, (ne, nh, c), self.param_dtype)
    type_bias = self.param("type_bias", logical(nn.initializers.zeros, None, "heads"), (ne, nh),
                           self.param_dtype)
    f32 = jnp.promote_types(self.dtype, jnp.float32)                # logits and softmax: >= fp32
    v = proj("value")                                               # (B, N, H, C)
    vf = v.astype(f32)
    s_src = jnp.einsum("bjhc,ehc->bjeh", vf, a_src.astype(f32))     # (B, N, E, H)
    s_dst = jnp.einsum("bihc,ehc->bieh", vf, a_dst.astype(f32))
    t = jnp.clip(types, 0)                                          # (B, Ni, Nj)
    node = jnp.arange(n)

    def pick(scores, owner):
      """scores (B, N, E, H) of node owner[i, j] at the edge type of (i, j) -> (B, Ni, Nj, H),
      one flat gather (indexing (B, Ni, Nj, E, H) would materialise E times the logits)."""
      flat = (owner * ne + t).reshape(b, n * n, 1)                  # (B, Ni * Nj, 1)
      return jnp.take_along_axis(scores.reshape(b, n * ne, nh), flat, axis=1).reshape(b, n, n, nh)

    g = pick(s_src, node[None, None, :]) + pick(s_dst, node[None, :, None])   # (B, Ni, Nj, H)
    logits = nn.leaky_relu(g, self.negative_slope) + type_bias.astype(f32)[types]
    logits = jnp.moveaxis(logits, -1, 1)                            # (B, H, N, N)
    if self.content:
      q, k = proj("query"), proj("key")
      logits = logits + jnp.einsum("bihc,bjhc->bhij", q, k).astype(f32) / math.sqrt(c)
    alpha = masked_softmax(logits, adjacency[:, None])              # (B, H, N, N)
    y = jnp.einsum("bhij,bjhc->bihc", alpha.astype(self.dtype), v)  # (B, N, H, C)
    y = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=logical(nn.initializers.xavier_uniform(), "heads", "kv",
                                            "embed"),
                        bias_init=logical(nn.initializers.zeros, "embed"), name="out")(y)
    return y, alpha


class MTAGBlock(nn.Module):
  """Pre-LN MTAG layer: x + ModalTemporalAttention(LN(x)), then x + Mlp(LN(x)) when mlp_dim > 0.
  Same call as ModalTemporalAttention: -> (x (B, N, D), attention (B, H, N, N))."""
  num_modalities: int
  num_heads: int
  mlp_dim: int
  content: bool = True
  act: str = "gelu"
  negative_slope: float = 0.2
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, modality_ids, types, adjacency):
    norm = functools.partial(LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    y, alpha = ModalTemporalAttention(self.num_modalities, self.num_heads, self.content,
                                      self.negative_slope, self.dtype, self.param_dtype,
                                      name="attn")(norm(name="ln_1")(x), modality_ids, types,
                                                   adjacency)
    x = x + y
    if self.mlp_dim:
      x = x + Mlp(self.mlp_dim, self.act, self.dtype, self.param_dtype, name="mlp")(
          norm(name="ln_2")(x))
    return x, alpha


class MTAGGraph(nn.Module):
  """The MTAG network on a node set (Yang et al. 2021): num_layers MTAGBlocks; after each but the
  last, every node keeps only its keep_edges strongest incoming edges (prune_top_k on that block's
  attention, no gradient through the choice) for the blocks that follow. Then a final LayerNorm and
  the readout: the masked mean of the nodes of each modality (zeros for a modality with no real
  node), concatenated (B, M * D) and projected by a Dense to out_dim.

  __call__(x (B, N, D), modality_ids (N,) or (B, N), times (B, N), mask (B, N), steps=None)
  -> (nodes (B, N, D), pooled (B, out_dim)); see edge_types for times and steps. The outputs at
  padded nodes are meaningless; nothing else depends on them.

  Attributes:
    num_modalities, num_layers, num_heads: the architecture.
    keep_edges: int k (top-k incoming edges per node) or float ratio in (0, 1]; None: no pruning.
    mlp_dim: hidden width of each block's feed-forward layer; None: 2 * D; 0: none (the paper's).
    out_dim: width of the pooled output; None: D.
    content, act, negative_slope, layer_norm_eps, dtype, param_dtype: see MTAGBlock.
  """
  num_modalities: int
  num_layers: int
  num_heads: int
  keep_edges: int | float | None = 0.5
  mlp_dim: int | None = None
  out_dim: int | None = None
  content: bool = True
  act: str = "gelu"
  negative_slope: float = 0.2
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, modality_ids, times, mask, steps=None):
    if self.keep_edges is not None:
      _check_keep(self.keep_edges, "MTAG")
    if x.ndim != 3 or mask.shape != x.shape[:2]:
      raise ValueError(f"MTAG nodes must be (batch, nodes, features) with a (batch, nodes) mask, "
                       f"got x {x.shape} and mask {mask.shape}")
    b, n, d = x.shape
    mask = jnp.asarray(mask, bool)
    types = edge_types(modality_ids, times, mask, num_modalities=self.num_modalities,
                       steps=steps)                                 # (B, N, N)
    adjacency = types >= 0
    x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
    mlp_dim = 2 * d if self.mlp_dim is None else self.mlp_dim
    for layer in range(self.num_layers):
      x, alpha = MTAGBlock(self.num_modalities, self.num_heads, mlp_dim, self.content, self.act,
                           self.negative_slope, self.layer_norm_eps, self.dtype,
                           self.param_dtype, name=f"block_{layer}")(x, modality_ids, types,
                                                                    adjacency)
      if self.keep_edges is not None and layer < self.num_layers - 1:
        adjacency = prune_top_k(jax.lax.stop_gradient(alpha), adjacency, self.keep_edges)
    x = LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                  name="ln_final")(x)
    member = jax.nn.one_hot(jnp.broadcast_to(modality_ids, (b, n)), self.num_modalities,
                            dtype=jnp.float32) * mask[..., None]    # (B, N, M)
    sums = jnp.einsum("bnm,bnd->bmd", member, jnp.where(mask[..., None], x, 0).astype(jnp.float32))
    means = sums / jnp.maximum(jnp.sum(member, axis=1), 1.0)[..., None]  # (B, M, D)
    pooled = nn.Dense(d if self.out_dim is None else self.out_dim, dtype=self.dtype,
                      param_dtype=self.param_dtype,
                      kernel_init=logical(nn.initializers.lecun_normal(), "embed", "proj"),
                      bias_init=logical(nn.initializers.zeros, "proj"), name="readout")(
                          means.reshape(b, self.num_modalities * d))  # (B, M * D) -> (B, out)
    return x, pooled


class MTAG(nn.Module):
  """MTAG (Yang et al. 2021) on unaligned streams: graph_nodes, then MTAGGraph.

  __call__(xs {name: (B, T_name, D)}, lengths {name: (B,)} or None) -> (B, out_dim). The streams
  come already embedded to `width`, with positions added by the caller; lengths count the real
  steps at the start of each row (0 allowed: that stream then has no node in that row).

  Attributes:
    num_layers, num_heads, width: the architecture (width = D of every stream).
    keep_edges: top-k incoming edges per node (int) or a ratio of them (float); None: no pruning.
    modalities: the order of the streams (it numbers modalities and edge types); None: sorted
      names of xs.
    mlp_dim, out_dim, content, act, negative_slope, layer_norm_eps, dtype, param_dtype: see
      MTAGGraph.
  """
  num_layers: int
  num_heads: int
  width: int
  keep_edges: int | float | None = 0.5
  modalities: Sequence[str] | None = None
  mlp_dim: int | None = None
  out_dim: int | None = None
  content: bool = True
  act: str = "gelu"
  negative_slope: float = 0.2
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Mapping[str, jax.Array], lengths: Mapping[str, jax.Array] | None = None):
    names = tuple(sorted(xs)) if self.modalities is None else tuple(self.modalities)
    if set(names) != set(xs):
      raise ValueError(f"MTAG(modalities={names}) got streams {sorted(xs)}; expected exactly "
                       "those names")
    if lengths is not None and set(lengths) - set(names):
      raise ValueError(f"MTAG: lengths for unknown streams {sorted(set(lengths) - set(names))}; "
                       f"the streams are {names}")
    batch = xs[names[0]].shape[0]
    for name in names:
      shape = xs[name].shape
      if len(shape) != 3 or shape[0] != batch or shape[2] != self.width:
        raise ValueError(f"MTAG: stream {name!r} has shape {shape}; expected (batch={batch}, "
                         f"length, width={self.width}), already embedded to the width")
    x, ids, times, mask = graph_nodes(xs, lengths, names)
    _, pooled = MTAGGraph(len(names), self.num_layers, self.num_heads, self.keep_edges,
                          self.mlp_dim, self.out_dim, self.content, self.act, self.negative_slope,
                          self.layer_norm_eps, self.dtype, self.param_dtype, name="graph")(
                              x, ids, times, mask)
    return pooled
