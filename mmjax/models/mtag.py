"""MTAG: a modal-temporal attention graph over unaligned multimodal sequences (Yang et al. 2021,
"MTAG: Modal-Temporal Attention Graph for Unaligned Human Multimodal Language Sequences", NAACL,
https://arxiv.org/abs/2010.11985).

  num_edge_types, graph_nodes, edge_types, prune_top_k
                           the graph itself: mmjax.models.mtag_graph (importable from here too)
  ModalTemporalAttention   multi-head graph attention: per-modality projections, per-edge-type
                           attention vectors and biases. (B, N, D) -> (B, N, D), (B, H, N, N);
                           the node modalities (N,) must be concrete (numpy), as graph_nodes
                           gives them: they decide which projection each node block takes
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
from mmjax.models.mtag_graph import (check_keep, edge_types, graph_nodes, num_edge_types,
                                     prune_top_k)
from mmjax.models.transformer import Mlp


def _static_ids(modality_ids, n: int, num_modalities: int) -> np.ndarray:
  """The node modalities as a concrete (N,) numpy array in [0, M), or a ValueError."""
  try:
    ids = np.asarray(modality_ids)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise ValueError("MTAG attention needs the node modalities as a concrete (N,) array (the "
                     "same for every graph of the batch, as graph_nodes gives), not a traced "
                     "one") from e
  if ids.shape != (n,) or ids.dtype.kind not in "iu" or ids.min(initial=0) < 0 or ids.max(
      initial=0) >= num_modalities:
    raise ValueError(f"modality_ids must be {n} ints in [0, {num_modalities}), one per node; "
                     f"got shape {ids.shape} dtype {ids.dtype}")
  return ids.astype(np.int32)


def _edge_scores(s_src, s_dst, bias, types, slope: float):
  """The GAT part of the logits, LeakyReLU(a^src_tau . v_j + a^dst_tau . v_i) + b_tau, of every
  edge j -> i: s_src, s_dst (B, N, E, H) hold each node's score under every edge type, bias (E, H),
  types (B, Ni, Nj) -> (B, Ni, Nj, H) (anything on absent edges).

  One flat gather per term: indexing (B, Ni, Nj, E, H) would materialise E times the logits.
  (Measured here: building the logits block by block, (target, source) modality with the temporal
  relation chosen by jnp.where, made a 283 ms MTAG training step 424 ms.)
  """
  b, n, ne, nh = s_src.shape
  t = jnp.clip(types, 0)                                            # (B, Ni, Nj)
  node = jnp.arange(n)

  def pick(scores, owner):                     # scores of node owner[i, j] at type t[i, j]
    flat = (owner * ne + t).reshape(b, n * n, 1)                    # (B, Ni * Nj, 1)
    return jnp.take_along_axis(scores.reshape(b, n * ne, nh), flat, axis=1).reshape(b, n, n, nh)

  g = pick(s_src, node[None, None, :]) + pick(s_dst, node[None, :, None])   # (B, Ni, Nj, H)
  return nn.leaky_relu(g, slope) + bias[t]


class ModalTemporalAttention(nn.Module):
  """MTAG's modal-temporal attention (Yang et al. 2021, Sec. 3.2), multi-head and dense.

  With v_j = W^v_{m_j} x_j (a projection per node modality, as the paper's node-type-specific
  Theta), per head and for an edge j -> i of type tau = type[i, j]:
      e_ij = LeakyReLU(a^src_tau . v_j + a^dst_tau . v_i) + b_tau  [+ q_i . k_j / sqrt(C)]
      alpha_ij = softmax_j(e_ij) over the edges into i,    y_i = W^o [sum_j alpha_ij v_j]_heads
  q_i = W^q_{m_i} x_i and k_j = W^k_{m_j} x_j (content=True only). A node without incoming edges
  gets y_i = W^o 0 + bias. The per-type parameters are small: 2 * H * C + H per edge type.

  __call__(x (B, N, D), modality_ids (N,) concrete, types (B, N, N), adjacency (B, N, N) bool)
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
    ids = _static_ids(modality_ids, n, nm)
    order = np.argsort(ids, kind="stable")     # nodes grouped by modality (undone at the end)
    permuted = not np.array_equal(order, np.arange(n))
    if permuted:
      x, types, adjacency = x[:, order], types[:, order][:, :, order], adjacency[:, order][:, :,
                                                                                        order]
    start = np.concatenate([[0], np.cumsum(np.bincount(ids, minlength=nm))])
    x = x.astype(self.dtype)

    def proj(name):                            # (B, N, D) -> (B, N, H, C), W_{m} per block
      w = self.param(name, logical(nn.initializers.lecun_normal(in_axis=1, out_axis=(2, 3),
                                                                batch_axis=0),
                                   "modality", "embed", "heads", "kv"), (nm, d, nh, c),
                     self.param_dtype)
      bias = self.param(f"{name}_bias", logical(nn.initializers.zeros, "modality", "heads", "kv"),
                        (nm, nh, c), self.param_dtype)
      return jnp.concatenate([jnp.einsum("bnd,dhc->bnhc", x[:, start[m]:start[m + 1]],
                                         w[m].astype(self.dtype)) + bias[m].astype(self.dtype)
                              for m in range(nm)], axis=1)

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
    logits = _edge_scores(s_src, s_dst, type_bias.astype(f32), types,
                          self.negative_slope)                      # (B, Ni, Nj, H)
    logits = jnp.moveaxis(logits, -1, 1)                            # (B, H, N, N)
    if self.content:
      q, k = proj("query"), proj("key")
      logits = logits + jnp.einsum("bihc,bjhc->bhij", q, k).astype(f32) / math.sqrt(c)
    # over the edges into each node; a node without any gets zeros (and masked entries no gradient)
    alpha = jax.nn.softmax(logits, axis=-1, where=adjacency[:, None])   # (B, H, N, N)
    y = jnp.einsum("bhij,bjhc->bihc", alpha.astype(self.dtype), v)  # (B, N, H, C)
    y = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=logical(nn.initializers.xavier_uniform(), "heads", "kv",
                                            "embed"),
                        bias_init=logical(nn.initializers.zeros, "embed"), name="out")(y)
    if permuted:
      back = np.argsort(order)
      y, alpha = y[:, back], alpha[:, :, back][:, :, :, back]
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

  __call__(x (B, N, D), modality_ids (N,) concrete, times (B, N), mask (B, N), steps=None)
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
      check_keep(self.keep_edges, "MTAG")
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
