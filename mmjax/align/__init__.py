"""Explicit alignment between the elements of two modalities.

  discrete    ot: sinkhorn (entropic, unbalanced optional), hard_matching (exact assignment),
              ot_alignment_loss (word-region alignment)
  continuous  dtw: dtw (value and path), soft_dtw and its expected alignment, warping_curve;
              squared_distances (from mmjax.similarity), the usual cost between sequences;
              segment: change_points (optimal segmentation), segment_means, kmeans, quantize;
              resample: align_to_reference (a padded stream averaged onto a reference
              stream's clock by DTW, OT or time-stretching: early fusion of unaligned streams)
  attention   attention: capture_attention / attention_alignment (cross-attention weights),
              patch_embeddings / token_embeddings / span_embeddings and
              occlusion_alignment of a TwoTower, similarity_alignment

Pure functions of arrays, jittable, batched over leading axes (except the model readers in
attention, which apply a Flax model).
"""
from mmjax.align.attention import (attention_alignment, capture_attention, occlusion_alignment,
                                   patch_embeddings, similarity_alignment, span_embeddings,
                                   token_embeddings)
from mmjax.align.dtw import DTWOutput, dtw, soft_dtw, soft_dtw_alignment, warping_curve
from mmjax.align.ot import SinkhornOutput, hard_matching, ot_alignment_loss, sinkhorn
from mmjax.align.resample import (ALIGN_COSTS, ALIGN_METHODS, align_to_reference,
                                  alignment_cost, alignment_weights)
from mmjax.align.segment import (KMeansOutput, change_points, kmeans, kmeans_plus_plus, quantize,
                                 segment_costs, segment_means)
from mmjax.similarity import squared_distances

__all__ = [
    "sinkhorn", "SinkhornOutput", "hard_matching", "ot_alignment_loss",
    "dtw", "DTWOutput", "soft_dtw", "soft_dtw_alignment", "squared_distances", "warping_curve",
    "change_points", "segment_costs", "segment_means", "kmeans", "kmeans_plus_plus", "KMeansOutput",
    "quantize", "align_to_reference", "alignment_weights", "alignment_cost", "ALIGN_METHODS",
    "ALIGN_COSTS",
    "capture_attention", "attention_alignment", "patch_embeddings", "occlusion_alignment",
    "token_embeddings", "span_embeddings", "similarity_alignment",
]
