"""Fission: split each modality's features into a shared and a modality-unique representation.

FactorCL (Liang et al. 2023, "Factorized Contrastive Learning: Going Beyond Multi-view Redundancy")
and MISA (Hazarika et al. 2020) keep, per modality, a representation of what the modalities share
and one of what only that modality carries; mmjax.losses.factorized_loss trains the pair.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.common import Dtype, MlpHead, check_modalities
from mmjax.similarity import l2_normalize


class FactorizedOutput(NamedTuple):
  """What FactorizedHeads returns: one shared and one unique embedding per modality."""
  shared: tuple[jax.Array, ...]
  """Per modality, (B, shared_dim) L2-normalised float32."""
  unique: tuple[jax.Array, ...]
  """Per modality, (B, unique_dim) L2-normalised float32."""


class FactorizedHeads(nn.Module):
  """Shared and unique heads on each modality's encoder features:

      shared_i = normalize(S_i(x_i)),   unique_i = normalize(U_i(x_i)),   i = 1..M

  S_i, U_i: a Dense (or an MLP with `hidden`) per modality and per kind, so 2M heads. Features
  [x_1 (B, d_1), ..., x_M (B, d_M)] -> FactorizedOutput(shared=(B, shared_dim) x M,
  unique=(B, unique_dim) x M), float32.

  Training with mmjax.losses.factorized_loss (two modalities a, b; x_a2, x_b2 are second
  augmentations of the same rows, for the unimodal contrastive terms of the unique parts):

      def loss_fn(params, x_a, x_b, x_a2, x_b2):
        out = heads.apply(params, [enc_a(x_a), enc_b(x_b)])
        aug = heads.apply(params, [enc_a(x_a2), enc_b(x_b2)])
        return factorized_loss(out.shared[0], out.shared[1],        # cross-modal, shared
                               out.unique[0], aug.unique[0],        # modality a, unique
                               out.unique[1], aug.unique[1],        # modality b, unique
                               scale, orthogonality_weight=0.1)
  """
  shared_dim: int
  unique_dim: int
  hidden: Sequence[int] = ()
  act: str = "relu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs):
    check_modalities(xs, type(self).__name__, min_count=1)
    shared, unique = [], []
    for i, x in enumerate(xs):
      x = jnp.asarray(x, self.dtype)
      for dim, out, kind in ((self.shared_dim, shared, "shared"),
                             (self.unique_dim, unique, "unique")):
        head = MlpHead(self.hidden, dim, self.act, "proj", self.dtype, self.param_dtype,
                       name=f"{kind}_{i}")
        out.append(l2_normalize(head(x)))                                # (B, d_i) -> (B, dim)
    return FactorizedOutput(tuple(shared), tuple(unique))
