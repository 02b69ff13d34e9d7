"""Cross-modal transfer (Ngiam et al. 2011, "hearing to see"): a linear classifier trained on one
modality's embeddings and tested on the other modality's embeddings of held-out examples.

Each modality is standardised with its own statistics (train statistics for the training modality,
the test set's own for the other): the embeddings of two modalities sit in different regions of
the shared space (the "modality gap", Liang et al. 2022), and a shared representation is judged by
whether the class directions agree, not by whether the clouds coincide.
"""
from __future__ import annotations

import numpy as np

from mmjax.evaluate import probe


def cross_modal_transfer(train_a, train_y, test_b, test_y, num_classes: int, *,
                         l2: float = 1e-3) -> float:
  """Accuracy on test_b (n, d) of a logistic probe fitted on train_a (m, d) with labels train_y."""
  params = probe.fit_logistic(train_a, train_y, num_classes, l2=l2)
  test_b = np.asarray(test_b, np.float32)
  params = {**params, "mean": test_b.mean(0), "std": test_b.std(0) + 1e-6}
  return probe.probe_accuracy(params, test_b, test_y)


def transfer_metrics(train: dict, test: dict, train_y, test_y, num_classes: int, *,
                     names: tuple[str, str], l2: float = 1e-3) -> dict[str, float]:
  """Both directions and the same-modality baselines for embeddings train[name] / test[name]:
  {'a_to_b', 'b_to_a', 'a_to_a', 'b_to_b'} with a, b = names."""
  out = {}
  for src in names:
    for dst in names:
      out[f"{src}_to_{dst}"] = cross_modal_transfer(train[src], train_y, test[dst], test_y,
                                                    num_classes, l2=l2)
  return out
