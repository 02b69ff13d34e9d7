"""Modality contribution: how much a model's accuracy depends on each modality.

  derangement             a random permutation without fixed points (every example mismatched)
  drop_modality           a modality replaced by an uninformative input (zeros or the mean)
  modality_contribution   accuracy with both modalities, with each one dropped, and with each one
                          taken from another example (mismatched), at evaluation time

Dropping (ablation) and mismatching (permutation) are the usual probes of modality reliance, e.g.
Gat et al. 2021 ("Perceptual Score: What Data Modalities Does Your Model Perceive?", permutation)
and Hessel & Lee 2020 (who use it beside EMAP). A mismatched input keeps the modality's statistics,
so unlike a zeroed one it never leaves the training distribution. A label always stays with its
example; only the probed modality is changed.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.quantify.emap import accuracy

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""
BASELINES = ("zero", "mean")


@functools.partial(jax.jit, static_argnums=1)
def _derangement(key: Array, n: int) -> Array:
  k_perm, k_shift = jax.random.split(key)
  p = jnp.argsort(jax.random.uniform(k_perm, (n,)))                  # a uniform random order
  r = jax.random.randint(k_shift, (), 1, n)
  return jnp.zeros((n,), jnp.int32).at[p].set(p[(jnp.arange(n) + r) % n].astype(jnp.int32))


def derangement(key: Array, n: int) -> Array:
  """A random permutation sigma of range(n) with sigma(i) != i for every i (n >= 2): a random order
  p, shifted by a random r in [1, n): sigma(p_k) = p_{(k + r) mod n}. (n,) int32."""
  if not isinstance(n, int) or n < 2:
    raise ValueError(f"derangement needs n >= 2 elements, got {n!r}")
  return _derangement(key, n)


def drop_modality(x, how: str = "zero"):
  """x (a pytree of (N, ...) arrays) with every example replaced by zeros ('zero') or by the mean
  example ('mean'): the input carries no information about which example it is."""
  if how not in BASELINES:
    raise ValueError(f"drop_modality: unknown baseline {how!r}; expected one of {BASELINES}")
  if how == "zero":
    return jax.tree.map(jnp.zeros_like, x)
  return jax.tree.map(lambda v: jnp.broadcast_to(jnp.mean(v, 0, keepdims=True).astype(v.dtype),
                                                 v.shape), x)


def _predict(f: Callable, a, b, batch_size: int) -> np.ndarray:
  n = jax.tree.leaves(a)[0].shape[0]
  out = [np.asarray(f(*(jax.tree.map(lambda x: x[s:s + batch_size], t) for t in (a, b))))
         for s in range(0, n, batch_size)]
  return np.concatenate(out)


def modality_contribution(f: Callable, a, b, labels: Array, *, key: Array,
                          baseline: str = "zero", names: tuple[str, str] = ("a", "b"),
                          batch_size: int = 256) -> dict[str, float]:
  """Accuracy of f(a, b) with both modalities, and with one dropped or mismatched.

  Args:
    f: the model, (a_batch, b_batch) -> logits (P, C) or (P,) (binary, logit > 0).
    a, b: the two modalities, pytrees of (N, ...) arrays, example i paired with example i.
    labels: (N,) int labels.
    key: PRNG key of the mismatching derangement (one shared by both modalities).
    baseline: 'zero' or 'mean', what a dropped modality becomes (drop_modality).
    names: the two modalities' names in the result keys.
    batch_size: examples per call of f (f is jitted once).

  Returns:
    {'accuracy', 'without_<a>', 'without_<b>', 'mismatched_<a>', 'mismatched_<b>'} accuracies
    and, for each probe, '<probe>_drop' = accuracy - the probe's accuracy (the modality's
    contribution).
  """
  n = jax.tree.leaves(a)[0].shape[0]
  if jax.tree.leaves(b)[0].shape[0] != n or np.shape(labels) != (n,):
    raise ValueError(f"modality_contribution: a, b and labels must hold the same N examples, got "
                     f"{n}, {jax.tree.leaves(b)[0].shape[0]} and labels of shape "
                     f"{np.shape(labels)}")
  fn = jax.jit(f)
  sigma = derangement(key, n)
  shuffle = lambda t: jax.tree.map(lambda x: jnp.asarray(x)[sigma], t)  # noqa: E731
  inputs = {"accuracy": (a, b),
            f"without_{names[0]}": (drop_modality(a, baseline), b),
            f"without_{names[1]}": (a, drop_modality(b, baseline)),
            f"mismatched_{names[0]}": (shuffle(a), b),
            f"mismatched_{names[1]}": (a, shuffle(b))}
  out = {k: accuracy(_predict(fn, x, y, batch_size), labels) for k, (x, y) in inputs.items()}
  out.update({f"{k}_drop": out["accuracy"] - v for k, v in list(out.items()) if k != "accuracy"})
  return out
