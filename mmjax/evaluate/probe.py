"""Linear probes on frozen embeddings: multinomial logistic regression trained with optax L-BFGS.

    params = fit_logistic(train_x, train_y, num_classes, l2=1e-3)
    accuracy = probe_accuracy(params, test_x, test_y)

The objective is  mean_i CE(softmax(W x_i + b), y_i) + l2 / 2 * ||W||^2  (b not penalised): the
same minimiser as scikit-learn's LogisticRegression(C = 1 / (n * l2)). Features are standardised
with the training set's mean and standard deviation (stored in the params and applied to test
features). Training is full-batch; examples are padded to a power of two with zero weight, so probes
of similar size share one compilation.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _objective(wb, x, y, weight, l2):
  """Weighted mean cross-entropy + l2/2 ||W||^2 of the linear model wb = (W (d, C), b (C,))."""
  w, b = wb
  logits = x @ w + b                                                      # (n, d) @ (d, C)
  ce = optax.losses.softmax_cross_entropy_with_integer_labels(logits, y)    # (n,)
  return jnp.sum(weight * ce) / jnp.sum(weight) + 0.5 * l2 * jnp.sum(w * w)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(x, y, weight, l2, *, num_classes: int, steps: int):
  wb = (jnp.zeros((x.shape[1], num_classes), x.dtype), jnp.zeros((num_classes,), x.dtype))
  loss = functools.partial(_objective, x=x, y=y, weight=weight, l2=l2)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry, _):
    wb, state = carry
    value, grad = value_and_grad(wb, state=state)
    updates, state = opt.update(grad, state, wb, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(wb, updates), state), None

  (wb, _), _ = jax.lax.scan(step, (wb, opt.init(wb)), None, length=steps)
  return wb


def fit_logistic(x, y, num_classes: int, *, l2: float = 1e-3, steps: int = 200) -> dict:
  """{'w': (d, C), 'b': (C,), 'mean': (d,), 'std': (d,)} fitted on features x (n, d), labels
  y (n,) in [0, num_classes)."""
  x, y = np.asarray(x, np.float32), np.asarray(y)
  if x.ndim != 2 or y.shape != (len(x),) or len(x) == 0:
    raise ValueError(f"expected features (n, d) and labels (n,) with n >= 1, got {x.shape} and "
                     f"{y.shape}")
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
  mean, std = x.mean(0), x.std(0) + 1e-6
  padded = 1 << max(int(len(x) - 1).bit_length(), 3)
  pad = padded - len(x)
  xs = np.concatenate([(x - mean) / std, np.zeros((pad, x.shape[1]), np.float32)])
  ys = np.concatenate([y, np.zeros(pad, y.dtype)]).astype(np.int32)
  weight = np.concatenate([np.ones(len(x)), np.zeros(pad)]).astype(np.float32)
  w, b = _fit(xs, ys, weight, np.float32(l2), num_classes=num_classes, steps=steps)
  return {"w": np.asarray(w), "b": np.asarray(b), "mean": mean, "std": std}


def probe_logits(params: dict, x) -> np.ndarray:
  """(n, C) logits of features x (n, d) under a fitted probe."""
  return ((np.asarray(x, np.float32) - params["mean"]) / params["std"]) @ params["w"] + params["b"]


def probe_accuracy(params: dict, x, y) -> float:
  """Top-1 accuracy of a fitted probe on features x (n, d) with labels y (n,)."""
  return float(np.mean(np.argmax(probe_logits(params, x), axis=1) == np.asarray(y)))


def few_shot_indices(labels, k: int, seed: int = 0) -> np.ndarray:
  """Sorted indices of k examples per class (fewer where a class has fewer), drawn at random."""
  labels = np.asarray(labels)
  if k < 1:
    raise ValueError(f"few-shot k must be >= 1, got {k}")
  rng = np.random.default_rng(seed)
  picks = [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
  return np.sort(np.concatenate(picks))


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, *,
                 shots: Sequence[int] = (), l2: float = 1e-3, seed: int = 0) -> dict[str, float]:
  """{'top1': accuracy of a probe on all of train, '{k}_shot_top1': on k examples per class}."""
  out = {"top1": probe_accuracy(fit_logistic(train_x, train_y, num_classes, l2=l2), test_x,
                                test_y)}
  for k in shots:
    idx = few_shot_indices(train_y, k, seed)
    params = fit_logistic(np.asarray(train_x)[idx], np.asarray(train_y)[idx], num_classes, l2=l2)
    out[f"{k}_shot_top1"] = probe_accuracy(params, test_x, test_y)
  return out
