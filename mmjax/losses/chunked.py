"""Memory-bounded contrastive losses: blockwise CLIP (Inf-CL) and ring SigLIP.

chunked_clip_loss gives exactly clip_loss's value and gradient without ever holding the B x B logits:
the forward pass walks over blocks of rows with an online log-sum-exp for the columns, and a custom VJP
recomputes each block in the backward pass (Cheng et al. 2024, "Breaking the Memory Barrier: Near
Infinite Batch Size Scaling for Contrastive Loss", Inf-CL). Temporary memory is O(B * block).

siglip_ring_loss gives siglip_loss's value and gradient across devices without gathering: the text
shards travel around the ring of devices with jax.lax.ppermute and each device only ever scores its
b local images against one b-sized text shard (Zhai et al. 2023, the chunked form of Sec. 3.3).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mmjax._dtypes import at_least_float32
from mmjax.losses._utils import check_pair, gather, global_mean, logits_of

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


def chunked_clip_loss(image_emb: Array, text_emb: Array, scale, *, block_size: int = 1024,
                      axis_name=None) -> Array:
  """clip_loss computed blockwise: same value and gradient, O(B * block_size) temporary memory
  (Cheng et al. 2024, "Breaking the Memory Barrier: Near Infinite Batch Size Scaling for
  Contrastive Loss", Inf-CL; the loss is CLIP's, Radford et al. 2021).

      loss = 1/(2B) * sum_i [ (logsumexp_j L_ij - L_ii) + (logsumexp_j L_ji - L_ii) ],  L = s X Y^T

  Row log-sum-exps are computed one block of `block_size` rows at a time; column log-sum-exps are
  accumulated online (running max and rescaled sum) over the row blocks. The backward pass recomputes
  each (block, B) tile of logits from the saved log-sum-exps, so neither pass stores B x B values.
  B need not be a multiple of block_size (the last block is padded and masked).

  Args:
    image_emb, text_emb: (B, D) L2-normalised embeddings ((b, D) local shards under shard_map).
    scale: scalar exp(t).
    block_size: rows per block; memory ~ block_size * B floats per live tile.
    axis_name: mesh axis the batch is sharded over, inside jax.shard_map. Each device takes its local
      rows against the gathered columns; the column statistics are combined with pmax/psum, so no
      device holds more than (block_size, B) logits.

  Returns:
    scalar loss (identical on every device).
  """
  check_pair(image_emb, text_emb, ("image_emb", "text_emb"))
  if block_size < 1:
    raise ValueError(f"block_size must be a positive integer, got {block_size}")
  b = image_emb.shape[0]
  all_txt, offset = gather(text_emb, axis_name)  # the columns; images enter only as local rows
  acc = at_least_float32(image_emb, text_emb)
  # The diagonal L_ii of this device's rows: row i of image_emb pairs with row i of text_emb.
  diag = jnp.asarray(scale, acc) * jnp.sum(image_emb.astype(acc) * text_emb.astype(acc), axis=1)
  scale = _varying_like(scale, image_emb)
  lse_rows, lse_cols = _blockwise_lse(image_emb, all_txt, scale, block_size, axis_name)  # (b,), (B,)
  local_cols = jax.lax.dynamic_slice_in_dim(lse_cols, offset, b)  # this device's texts
  total = jnp.sum(lse_rows - diag) + jnp.sum(local_cols - diag)
  return global_mean(total, 2 * b, axis_name)


def _varying_like(x, like: Array) -> Array:
  """x plus a zero built from `like`: under shard_map a replicated x becomes varying over the axes
  `like` varies over (so the custom VJP may return a per-device cotangent for it, and the implicit
  cast's transpose sums those over devices); elsewhere it is x unchanged."""
  x = jnp.asarray(x)
  return x + jnp.zeros_like(like[0, 0], dtype=x.dtype)


def _pad_rows(x: Array, block: int) -> Array:
  return jnp.pad(x, ((0, -x.shape[0] % block), (0, 0)))


def _tiles(q: Array, block: int):
  """q (b, D) -> padded row blocks (nb, block, D) and a (nb, block) validity mask."""
  b = q.shape[0]
  qp = _pad_rows(q, block)
  nb = qp.shape[0] // block
  valid = (jnp.arange(nb * block) < b).reshape(nb, block)
  return qp.reshape(nb, block, q.shape[1]), valid


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _blockwise_lse(q: Array, k: Array, scale, block: int, axis_name):
  """Row and column log-sum-exps of L = scale * q @ k.T, q (b, D) local rows, k (B, D) all columns.

  Returns (lse_rows (b,), lse_cols (B,)); with axis_name the column statistics cover the rows of
  every device on that axis.
  """
  return _blockwise_lse_fwd(q, k, scale, block, axis_name)[0]


def _blockwise_lse_fwd(q, k, scale, block, axis_name):
  acc = at_least_float32(q, k)
  q_tiles, valid = _tiles(q, block)

  def body(carry, tile):
    col_max, col_sum = carry                                       # (B,), (B,)
    q_blk, ok = tile                                               # (block, D), (block,)
    logits = logits_of(q_blk, k, scale)                              # (block, D) @ (D, B) -> (block, B)
    lse_r = jax.nn.logsumexp(logits, axis=1)                       # (block,)
    masked = jnp.where(ok[:, None], logits, -jnp.inf)
    new_max = jnp.maximum(col_max, jnp.max(masked, axis=0))
    col_sum = (col_sum * jnp.exp(col_max - new_max)
               + jnp.sum(jnp.exp(masked - new_max[None, :]), axis=0))
    return (new_max, col_sum), lse_r

  # Built from k so that, under shard_map, the carries vary over the same mesh axes as the data.
  init = (jnp.full_like(k[:, 0], -jnp.inf, acc), jnp.zeros_like(k[:, 0], acc))
  (col_max, col_sum), lse_rows = jax.lax.scan(body, init, (q_tiles, valid))
  if axis_name is not None:
    # A device whose rows were all padding cannot exist (b >= 1), so every local max is finite.
    global_max = jax.lax.pmax(col_max, axis_name)
    col_sum = jax.lax.psum(col_sum * jnp.exp(col_max - global_max), axis_name)
    col_max = global_max
  lse_cols = col_max + jnp.log(col_sum)
  lse_rows = lse_rows.reshape(-1)[: q.shape[0]]
  return (lse_rows, lse_cols), (q, k, scale, lse_rows, lse_cols)


def _blockwise_lse_bwd(block, axis_name, res, cotangents):
  """d lse_r_i / d L_ij = softmax_row_ij and d lse_c_j / d L_ij = softmax_col_ij, tile by tile."""
  # With axis_name, lse_cols is replicated (invariant) and each device reads its own slice of it;
  # the implicit cast to varying there transposes to a psum, so g_cols arrives already summed over
  # devices and covers every column: nothing more to communicate here.
  del axis_name
  q, k, scale, lse_rows, lse_cols = res
  g_rows, g_cols = cotangents                                      # (b,), (B,)
  acc = at_least_float32(q, k)
  scale_acc = jnp.asarray(scale, acc)
  q_tiles, valid = _tiles(q, block)
  nb = q_tiles.shape[0]
  lse_r_tiles = _pad_rows(lse_rows[:, None], block).reshape(nb, block)
  g_r_tiles = _pad_rows(g_rows[:, None], block).reshape(nb, block)

  def body(carry, tile):
    dk, dscale = carry                                             # (B, D), ()
    q_blk, ok, lse_r, g_r = tile
    dots = jnp.einsum("nd,md->nm", q_blk, k, preferred_element_type=acc)  # (block, B)
    logits = scale_acc * dots
    p_rows = jnp.exp(logits - lse_r[:, None])
    p_cols = jnp.exp(logits - lse_cols[None, :])
    g = jnp.where(ok[:, None], g_r[:, None] * p_rows + g_cols[None, :] * p_cols, 0.0)  # dL/dlogits
    dq_blk = scale_acc * jnp.einsum("nm,md->nd", g.astype(k.dtype), k, preferred_element_type=acc)
    dk = dk + scale_acc * jnp.einsum("nm,nd->md", g.astype(q.dtype), q_blk,
                                     preferred_element_type=acc)
    dscale = dscale + jnp.sum(g * dots)
    return (dk, dscale), dq_blk

  init = (jnp.zeros_like(k, acc), jnp.zeros_like(k[0, 0], acc))
  (dk, dscale), dq = jax.lax.scan(body, init, (q_tiles, valid, lse_r_tiles, g_r_tiles))
  dq = dq.reshape(-1, q.shape[1])[: q.shape[0]]
  dscale = jnp.asarray(dscale, jnp.result_type(scale)).reshape(jnp.shape(scale))
  return dq.astype(q.dtype), dk.astype(k.dtype), dscale


_blockwise_lse.defvjp(_blockwise_lse_fwd, _blockwise_lse_bwd)


def siglip_ring_loss(image_emb: Array, text_emb: Array, scale, bias, *, axis_name) -> Array:
  """siglip_loss over the global batch with text shards passed around the device ring (Zhai et al.
  2023, "Sigmoid Loss for Language Image Pre-Training", Sec. 3.3).

  Same value and gradient as siglip_loss(..., axis_name) but each device holds only (b, b) logits
  and one text shard at a time: at step k it scores its images against the texts of device
  (i - k) mod n, then hands that shard to its neighbour with jax.lax.ppermute (whose transpose is the
  reverse permutation, so autodiff sends the text gradients back around the ring).

      loss = -1/B * sum_i sum_j log sigmoid(z_ij * (scale * x_i . y_j + bias))

  Args:
    image_emb, text_emb: (b, D) local shards of L2-normalised embeddings, inside jax.shard_map.
    scale, bias: scalars (SigLIP init 10 and -10).
    axis_name: the mesh axis the batch is sharded over (required).

  Returns:
    scalar loss (identical on every device).
  """
  check_pair(image_emb, text_emb, ("image_emb", "text_emb"))
  if axis_name is None:
    raise ValueError("siglip_ring_loss needs the axis_name of the batch-sharded mesh axis; on one "
                     "device use siglip_loss")
  n_dev = jax.lax.axis_size(axis_name)
  b = image_emb.shape[0]
  ring = [(i, (i + 1) % n_dev) for i in range(n_dev)]
  negatives_only = -jnp.ones((b, b))

  def block_loss(txt, z):
    logits = logits_of(image_emb, txt, scale) + bias                 # (b, b)
    return -jnp.sum(jax.nn.log_sigmoid(z.astype(logits.dtype) * logits))

  own = block_loss(text_emb, 2.0 * jnp.eye(b) - 1.0)                # positives on the diagonal

  def step(carry, _):
    txt, total = carry
    txt = jax.lax.ppermute(txt, axis_name, ring)
    return (txt, total + block_loss(txt, negatives_only)), None

  (_, total), _ = jax.lax.scan(step, (text_emb, own), None, length=n_dev - 1)
  return global_mean(total, b, axis_name)
