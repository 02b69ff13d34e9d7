"""Quantification: does a multimodal model use both modalities, and their interactions?

  emap: emap_projection, emap, emap_accuracy    EMAP (Hessel & Lee 2020), additive projection
  contribution: modality_contribution, drop_modality, derangement
                                                accuracy with a modality dropped or mismatched
"""
from mmjax.quantify.contribution import derangement, drop_modality, modality_contribution
from mmjax.quantify.emap import EmapOutput, accuracy, emap, emap_accuracy, emap_projection

__all__ = ["emap", "emap_projection", "emap_accuracy", "EmapOutput", "accuracy",
           "modality_contribution", "drop_modality", "derangement"]
