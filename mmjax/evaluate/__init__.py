"""Evaluation of two-tower, two-view and fusion models (train.py during training, eval.py on a run).

  zero_shot    classifiers from class names x prompt templates; top-k, per-class, confusion
  retrieval    image <-> text recall@k and ranks, several captions per image, chunked and sharded
  probe        linear probes (optax L-BFGS logistic regression), few-shot
  correlation  CCA fitted on train embeddings, held-out canonical correlations (deep CCA)
  transfer     cross-modal transfer: a classifier trained on one modality, tested on the other
  arithmetic   embedding arithmetic retrieval (image - "red" + "blue")
  embed        batched embedding of a split on the mesh through the grain loader
  load         params from a train.py checkpoint or imported CLIP weights
  context      what evaluators work with: model, params, the task's outputs, the dataset's splits
  evaluators   evaluators named in the config with a schedule (train.py and eval.py run them)
  builtin      the built-in evaluators (zero_shot, retrieval, probe, transfer, arithmetic, ...)
  report       PNG plots and report.md
"""
from mmjax.evaluate.arithmetic import arithmetic_metrics, attribute_swap_hits
from mmjax.evaluate.correlation import correlation_metrics, fit_cca, held_out_correlations
from mmjax.evaluate.probe import fit_logistic, few_shot_indices, linear_probe
from mmjax.evaluate.retrieval import rank_metrics, retrieval_metrics, retrieval_ranks
from mmjax.evaluate.transfer import cross_modal_transfer
from mmjax.evaluate.zero_shot import (accuracy, classifier_weights, classify, confusion_matrix,
                                      zero_shot_logits)

__all__ = ["classifier_weights", "zero_shot_logits", "accuracy", "classify", "confusion_matrix",
           "retrieval_ranks", "retrieval_metrics", "rank_metrics", "fit_logistic", "linear_probe",
           "few_shot_indices", "fit_cca", "held_out_correlations", "correlation_metrics",
           "cross_modal_transfer", "arithmetic_metrics", "attribute_swap_hits"]
