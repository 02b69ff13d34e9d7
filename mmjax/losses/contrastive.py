"""Contrastive alignment objectives: CLIP, SigLIP, hinge (Kiros / VSE++), NT-Xent, SupCon.

Every function takes already L2-normalised embeddings and, where the objective has one, an
already-exponentiated scale (inverse temperature). Matmuls run in the input dtype (bf16 allowed) with
float32 accumulation; logits and the loss are float32 (float64 when the inputs are float64).

clip_loss and siglip_loss take `axis_name`: called inside `jax.shard_map` with the batch sharded over
that mesh axis, each device scores its local rows against the gathered global batch, so the value and
the gradient equal those of the single-device loss on the whole batch (all_gather transposes to
psum_scatter under autodiff, so no gradient is lost).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
# per-row softmax cross-entropy logsumexp_j L_ij - L_{i,label_i}: (n, m), (n,) int -> (n,)
from optax.losses import softmax_cross_entropy_with_integer_labels as _xent

from mmjax.losses._utils import check_pair, gather, global_mean, logits_of

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


def clip_loss(image_emb: Array, text_emb: Array, scale, *, axis_name=None) -> Array:
  """Symmetric InfoNCE loss of CLIP (Radford et al. 2021, "Learning Transferable Visual Models From
  Natural Language Supervision"; van den Oord et al. 2018 for InfoNCE).

  With L = scale * X Y^T over the (global) batch of B pairs:
      loss = 1/(2B) * sum_i [ (logsumexp_j L_ij - L_ii) + (logsumexp_j L_ji - L_ii) ]
  i.e. the mean of the image->text and text->image cross-entropies with the matching pair as label.

  Args:
    image_emb: (B, D) L2-normalised image embeddings (local shard (b, D) under shard_map).
    text_emb: (B, D) L2-normalised text embeddings, row i paired with image row i.
    scale: scalar, the exponentiated logit scale exp(t) (CLIP starts at 1/0.07, clamped at 100).
    axis_name: mesh axis the batch is sharded over, inside jax.shard_map; None on one device.

  Returns:
    scalar loss, averaged over the global batch (identical on every device).
  """
  check_pair(image_emb, text_emb, ("image_emb", "text_emb"))
  all_img, offset = gather(image_emb, axis_name)
  all_txt, _ = gather(text_emb, axis_name)
  labels = offset + jnp.arange(image_emb.shape[0])
  i2t = _xent(logits_of(image_emb, all_txt, scale), labels)          # (b, B) logits -> (b,)
  t2i = _xent(logits_of(text_emb, all_img, scale), labels)           # (b, B) logits -> (b,)
  return global_mean(jnp.sum(i2t) + jnp.sum(t2i), 2 * image_emb.shape[0], axis_name)


def siglip_loss(image_emb: Array, text_emb: Array, scale, bias, *, axis_name=None) -> Array:
  """Pairwise sigmoid loss of SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image
  Pre-Training").

  With z_ij = +1 for matching pairs (i == j) and -1 otherwise:
      loss = -1/B * sum_i sum_j log sigmoid(z_ij * (scale * x_i . y_j + bias))
  over the global batch of B pairs (normalised by B, not B^2, as in the paper).

  Args:
    image_emb, text_emb: (B, D) L2-normalised embeddings ((b, D) local shards under shard_map).
    scale: scalar exp(t'), SigLIP starts at 10.  bias: scalar, SigLIP starts at -10.
    axis_name: mesh axis the batch is sharded over, inside jax.shard_map; the local images are
      scored against the all-gathered texts. See siglip_ring_loss for the form that never gathers.

  Returns:
    scalar loss (identical on every device).
  """
  check_pair(image_emb, text_emb, ("image_emb", "text_emb"))
  all_txt, offset = gather(text_emb, axis_name)
  b, n = image_emb.shape[0], all_txt.shape[0]
  logits = logits_of(image_emb, all_txt, scale) + bias               # (b, B)
  positive = (offset + jnp.arange(b))[:, None] == jnp.arange(n)[None, :]
  z = jnp.where(positive, 1.0, -1.0).astype(logits.dtype)
  return global_mean(-jnp.sum(jax.nn.log_sigmoid(z * logits)), b, axis_name)


def hinge_loss(image_emb: Array, text_emb: Array, *, margin: float = 0.2,
               hardest_negative: bool = False) -> Array:
  """Bidirectional max-margin ranking loss (Kiros et al. 2014, "Unifying Visual-Semantic Embeddings
  with Multimodal Neural Language Models"; hardest negative: Faghri et al. 2018, VSE++).

  With cosine scores s_ij = x_i . y_j:
      sum_{j != i} [margin - s_ii + s_ij]_+  +  sum_{j != i} [margin - s_ii + s_ji]_+   (Kiros)
      max_{j != i} [margin - s_ii + s_ij]_+  +  max_{j != i} [margin - s_ii + s_ji]_+   (VSE++)
  summed over both directions and averaged over the B anchors (VSE++'s code sums over the batch:
  multiply by B for its value).

  Args:
    image_emb, text_emb: (B, D) L2-normalised embeddings, row i of each is a matching pair.
    margin: the margin alpha.  hardest_negative: use only the hardest negative per anchor.

  Returns:
    scalar loss.
  """
  check_pair(image_emb, text_emb, ("image_emb", "text_emb"))
  s = logits_of(image_emb, text_emb, 1.0)                            # (B, B)
  diag = jnp.diagonal(s)
  off = ~jnp.eye(s.shape[0], dtype=bool)
  cost_txt = jnp.where(off, jax.nn.relu(margin - diag[:, None] + s), 0.0)  # image anchors (rows)
  cost_img = jnp.where(off, jax.nn.relu(margin - diag[None, :] + s), 0.0)  # text anchors (cols)
  if hardest_negative:
    total = jnp.sum(jnp.max(cost_txt, axis=1)) + jnp.sum(jnp.max(cost_img, axis=0))
  else:
    total = jnp.sum(cost_txt) + jnp.sum(cost_img)
  return total / s.shape[0]


def supcon_loss(embeddings: Array, labels: Array, scale) -> Array:
  """Supervised contrastive loss, L^sup_out (Khosla et al. 2020, "Supervised Contrastive Learning").

  For anchors i with positives P(i) = {p != i : y_p = y_i} and A(i) = {a != i}:
      loss = mean_{i : |P(i)| > 0}  -1/|P(i)| sum_{p in P(i)} log( exp(s z_i.z_p) / sum_{a in A(i)} exp(s z_i.z_a) )
  Several views of a sample are stacked along the batch with the same label. Anchors without any
  positive are left out of the mean (the loss is 0 if no anchor has one).

  Args:
    embeddings: (N, D) L2-normalised embeddings (all views stacked).
    labels: (N,) integer class labels.
    scale: scalar inverse temperature 1/tau.

  Returns:
    scalar loss.
  """
  if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
    raise ValueError(f"supcon_loss expects embeddings (N, D) and labels (N,), got shapes "
                     f"{embeddings.shape} and {labels.shape}")
  logits = logits_of(embeddings, embeddings, scale)                  # (N, N)
  self_mask = jnp.eye(logits.shape[0], dtype=bool)
  log_prob = logits - jax.nn.logsumexp(jnp.where(self_mask, -jnp.inf, logits), axis=1,
                                       keepdims=True)
  positive = (labels[:, None] == labels[None, :]) & ~self_mask
  n_pos = jnp.sum(positive, axis=1)
  per_anchor = -jnp.sum(jnp.where(positive, log_prob, 0.0), axis=1) / jnp.maximum(n_pos, 1)
  has_pos = n_pos > 0
  return jnp.sum(jnp.where(has_pos, per_anchor, 0.0)) / jnp.maximum(jnp.sum(has_pos), 1)


def nt_xent_loss(view_a: Array, view_b: Array, scale) -> Array:
  """Normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, "A Simple Framework
  for Contrastive Learning of Visual Representations"), for two views of the same modality.

  Over the 2N embeddings z = [a; b], each one's positive is the other view of its sample and its
  negatives are the other 2N - 2 embeddings:
      loss = 1/(2N) sum_k -log( exp(s z_k.z_k+) / sum_{m != k} exp(s z_k.z_m) )
  It is supcon_loss with one label per sample.

  Args:
    view_a, view_b: (N, D) L2-normalised embeddings of two augmentations of the same N samples.
    scale: scalar inverse temperature 1/tau (SimCLR uses tau = 0.1 to 0.5).

  Returns:
    scalar loss.
  """
  check_pair(view_a, view_b, ("view_a", "view_b"))
  n = view_a.shape[0]
  z = jnp.concatenate([view_a, view_b], axis=0)                   # (2N, D)
  logits = logits_of(z, z, scale)                                    # (2N, 2N)
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  labels = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  return jnp.mean(_xent(logits, labels))
