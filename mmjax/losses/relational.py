"""Relational alignment: match the similarity structure within one modality to that within another.

Instead of pulling each pair together (contrastive) it asks that items which are similar as images be
similar as texts: the B x B within-modality similarity matrices are aligned across modalities.
Representational similarity analysis (Kriegeskorte et al. 2008) compares such matrices; as a training
objective it is the structure-preserving constraint of Wang et al. 2016 ("Learning Deep
Structure-Preserving Image-Text Embeddings") and the relational distillation of Park et al. 2019.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.losses._utils import logits_of

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


def relational_loss(x: Array, y: Array, *, scale=10.0, kind: str = "kl") -> Array:
  """Aligns the within-modality similarities S_x = X X^T and S_y = Y Y^T (diagonal excluded): the
  structure-preserving objective of Wang et al. 2016 ("Learning Deep Structure-Preserving
  Image-Text Embeddings") and the relational distillation of Park et al. 2019 ("Relational
  Knowledge Distillation").

  kind="kl": row distributions P_x[i] = softmax_{j != i}(scale * S_x[i, j]) (P_y likewise) and
      loss = 1/B sum_i 1/2 [KL(P_x[i] || P_y[i]) + KL(P_y[i] || P_x[i])]
  kind="mse": loss = 1/(B(B-1)) sum_{i != j} (S_x[i, j] - S_y[i, j])^2

  Both sides receive gradients; wrap one in jax.lax.stop_gradient to align a student to a teacher.

  Args:
    x: (B, Dx) L2-normalised embeddings of modality 1.
    y: (B, Dy) L2-normalised embeddings of modality 2, row i describing the same item as x[i]
      (Dx and Dy may differ: only within-modality similarities are compared).
    scale: inverse temperature of the row softmax (kind="kl" only).
    kind: "kl" or "mse".

  Returns:
    scalar loss.
  """
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
    raise ValueError(f"relational_loss expects x (B, Dx) and y (B, Dy) with the same B >= 2, got "
                     f"shapes {x.shape} and {y.shape}")
  b = x.shape[0]
  off = ~jnp.eye(b, dtype=bool)
  if kind == "mse":
    sx, sy = logits_of(x, x, 1.0), logits_of(y, y, 1.0)                 # (B, B) each
    return jnp.sum(jnp.where(off, (sx - sy) ** 2, 0.0)) / (b * (b - 1))
  if kind != "kl":
    raise ValueError(f"relational_loss kind must be 'kl' or 'mse', got {kind!r}")
  log_px = jax.nn.log_softmax(jnp.where(off, logits_of(x, x, scale), -jnp.inf), axis=1)
  log_py = jax.nn.log_softmax(jnp.where(off, logits_of(y, y, scale), -jnp.inf), axis=1)
  diff = jnp.where(off, log_px - log_py, 0.0)                       # 0 on the excluded diagonal
  sym_kl = jnp.sum((jnp.exp(log_px) - jnp.exp(log_py)) * diff, axis=1)  # KL(px||py) + KL(py||px)
  return 0.5 * jnp.mean(sym_kl)


