"""Factorised (fission) objectives: shared and modality-unique representations.

FactorCL (Liang et al. 2023, "Factorized Contrastive Learning: Going Beyond Multi-view Redundancy")
learns, for each modality, a shared representation that captures what the modalities have in common
and a unique one that captures task-relevant information present in that modality alone. Shared parts
are aligned across modalities with a contrastive bound on I(X1; X2); unique parts are trained with a
contrastive bound between augmentations of the same modality, and kept apart from the shared parts.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.losses._utils import logits_of
from mmjax.losses.contrastive import clip_loss, nt_xent_loss

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


def orthogonality_loss(shared: Array, unique: Array) -> Array:
  """Soft orthogonality (difference) loss of Domain Separation Networks (Bousmalis et al. 2016),
  used by MISA (Hazarika et al. 2020) to keep shared and unique subspaces apart:

      loss = || S^T U ||_F^2 / B^2,   S = shared (B, D), U = unique (B, D)

  Pass L2-normalised rows so the loss is the mean squared cosine between the two column spaces.

  Returns:
    scalar loss, 0 when every shared column is orthogonal to every unique column.
  """
  if shared.ndim != 2 or unique.ndim != 2 or shared.shape[0] != unique.shape[0]:
    raise ValueError(f"orthogonality_loss expects shared (B, Ds) and unique (B, Du) with the same B, "
                     f"got shapes {shared.shape} and {unique.shape}")
  cross = logits_of(shared.T, unique.T, 1.0)                          # (Ds, B) @ (B, Du) -> (Ds, Du)
  return jnp.sum(cross ** 2) / shared.shape[0] ** 2


def factorized_loss(shared_a: Array, shared_b: Array, unique_a: Array, unique_a_aug: Array,
                    unique_b: Array, unique_b_aug: Array, scale, *, unique_weight: float = 1.0,
                    orthogonality_weight: float = 0.0) -> Array:
  """Shared + unique contrastive objective, FactorCL-style (Liang et al. 2023, "Factorized
  Contrastive Learning: Going Beyond Multi-view Redundancy"; orthogonality: Bousmalis et al. 2016):

      loss = clip(Z^s_a, Z^s_b)                                   cross-modal, shared
           + w_u [nt_xent(Z^u_a, Z^u_a') + nt_xent(Z^u_b, Z^u_b')]  unimodal, unique (two augmentations)
           + w_o [orth(Z^s_a, Z^u_a) + orth(Z^s_b, Z^u_b)]           shared vs unique kept apart

  Args:
    shared_a, shared_b: (B, D) L2-normalised shared embeddings of modalities a and b (paired rows).
    unique_a, unique_a_aug: (B, D) unique embeddings of modality a under two augmentations.
    unique_b, unique_b_aug: (B, D) unique embeddings of modality b under two augmentations.
    scale: inverse temperature shared by the contrastive terms.
    unique_weight: w_u.  orthogonality_weight: w_o (0 disables the term).

  Returns:
    scalar loss.
  """
  loss = clip_loss(shared_a, shared_b, scale)
  loss += unique_weight * (nt_xent_loss(unique_a, unique_a_aug, scale)
                           + nt_xent_loss(unique_b, unique_b_aug, scale))
  if orthogonality_weight:
    loss += orthogonality_weight * (orthogonality_loss(shared_a, unique_a)
                                    + orthogonality_loss(shared_b, unique_b))
  return loss
