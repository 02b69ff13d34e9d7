"""Zero-shot classification with a two-tower model (Radford et al. 2021, Sec. 3.1.4).

The classifier for class c is the normalised mean of the normalised text embeddings of its name in
every prompt template ("prompt ensembling"); an image is assigned the class of highest cosine.

Ties count against the model: the label is in the top k when fewer than k *other* classes score at
least as high as it (so a constant classifier scores 0, not 1/C, at top-1). Predictions (for the
confusion matrix) are argmax with ties to the lowest class index.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.similarity import l2_normalize

# A few of CLIP's ImageNet prompts, for datasets that bring no templates of their own.
GENERIC_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of the small {}.",
                     "a photo of the large {}.", "a cropped photo of a {}.", "itap of a {}.",
                     "a rendering of a {}.", "art of the {}.")


def check_prompts(class_names: Sequence[str], templates: Sequence[str]) -> None:
  """ValueError for an empty class list, a non-string or empty name, or a template without '{}'."""
  if len(class_names) == 0:
    raise ValueError("class_names is empty: zero-shot classification needs at least one class")
  bad_names = [n for n in class_names if not isinstance(n, str) or not n.strip()]
  if bad_names:
    raise ValueError(f"class names must be non-empty strings; got {bad_names[:5]!r}")
  bad = [t for t in templates if not isinstance(t, str) or "{}" not in t]
  if len(templates) == 0 or bad:
    raise ValueError("every template needs a '{}' where the class name goes; got "
                     f"{list(templates)!r} (without '{{}}': {bad!r})")


def classifier_weights(encode_text: Callable[[np.ndarray], jax.Array], tokenizer,
                       class_names: Sequence[str], templates: Sequence[str]) -> jax.Array:
  """(C, E) unit-norm class embeddings from class names x templates.

  encode_text maps (N, L) int tokens to (N, E) unit-norm embeddings (it may batch internally);
  tokenizer maps a list of strings to (N, L) tokens. Raises ValueError for an empty class list or a
  template without '{}'.
  """
  check_prompts(class_names, templates)
  prompts = [t.format(name) for name in class_names for t in templates]
  emb = jnp.asarray(encode_text(tokenizer(prompts)))                     # (C * T, E)
  emb = emb.reshape(len(class_names), len(templates), -1).mean(axis=1)   # (C, E)
  return l2_normalize(emb)


def zero_shot_logits(image_emb: jax.Array, weights: jax.Array) -> jax.Array:
  """Cosine similarities (N, E) @ (E, C) -> (N, C)."""
  return jnp.einsum("ne,ce->nc", image_emb, weights)


def label_ranks(logits, labels) -> np.ndarray:
  """(N,) 0-based rank of each row's label: the number of other classes scoring >= it."""
  logits, labels = np.asarray(logits), np.asarray(labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"expected logits (N, C) and labels (N,), got {logits.shape} and "
                     f"{labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
    raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got {labels.min()}.."
                     f"{labels.max()}")
  own = np.take_along_axis(logits, labels[:, None], axis=1)            # (N, 1)
  return np.sum(logits >= own, axis=1) - 1


def accuracy(logits, labels, k: int = 1) -> float:
  """Top-k accuracy, ties against (module docstring): the mean of label_ranks < k."""
  return float(np.mean(label_ranks(logits, labels) < k))


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
  """(C, C) int64 counts; row = true class, column = predicted class."""
  out = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(out, (np.asarray(labels), np.asarray(predictions)), 1)
  return out


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
  """(C,) top-1 accuracy of each true class from a confusion matrix; NaN for absent classes."""
  totals = confusion.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(totals > 0, np.diag(confusion) / totals, np.nan)


def classify(logits, labels, ks: Sequence[int] = (1, 5)) -> dict:
  """Zero-shot summary of (N, C) logits: {'top{k}': float, 'top1_within_split': the same images
  among only the classes present in labels, 'mean_per_class': the mean of per-class top-1,
  'confusion': (C, C), 'per_class': (C,)}."""
  logits, labels = np.asarray(logits, np.float32), np.asarray(labels)
  ranks = label_ranks(logits, labels)
  out = {f"top{k}": float(np.mean(ranks < k)) for k in ks if k <= logits.shape[1]}
  present = np.unique(labels)
  out["top1_within_split"] = accuracy(logits[:, present], np.searchsorted(present, labels))
  confusion = confusion_matrix(labels, np.argmax(logits, axis=1), logits.shape[1])
  out["per_class"] = per_class_accuracy(confusion)
  out["mean_per_class"] = float(np.nanmean(out["per_class"]))
  out["confusion"] = confusion
  return out
