"""Alignment objectives (and the autoencoders' reconstruction objectives): pure, jittable functions
of arrays with no Flax state.

Conventions shared by every loss here:
  * embeddings are batch-major, shape (B, D); contrastive losses expect them L2-normalised;
  * `scale` is the already-exponentiated inverse temperature (CLIP: exp(t), starting at 1/0.07);
  * the loss is computed and returned in float32 (or float64 under x64), whatever the input dtype;
  * losses that see negatives from other devices take `axis_name` and must then be called inside
    `jax.shard_map` with the batch sharded over that mesh axis.
"""
from mmjax.losses.chunked import chunked_clip_loss, siglip_ring_loss
from mmjax.losses.contrastive import (clip_loss, hinge_loss, nt_xent_loss, siglip_loss,
                                      supcon_loss)
from mmjax.losses.correlation import (barlow_twins_loss, canonical_correlations, cca_loss,
                                      gcca_loss, soft_cca_loss, vicreg_loss)
from mmjax.losses.factorized import factorized_loss, orthogonality_loss
from mmjax.losses.reconstruction import bimodal_reconstruction_loss, dccae_loss
from mmjax.losses.relational import relational_loss

__all__ = [
    "clip_loss", "siglip_loss", "hinge_loss", "nt_xent_loss", "supcon_loss",
    "chunked_clip_loss", "siglip_ring_loss",
    "canonical_correlations", "cca_loss", "gcca_loss", "soft_cca_loss", "barlow_twins_loss",
    "vicreg_loss",
    "relational_loss",
    "factorized_loss", "orthogonality_loss",
    "dccae_loss", "bimodal_reconstruction_loss",
]
