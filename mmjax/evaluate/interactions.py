"""Evaluators of what a classifier's predictions rest on: its inputs grouped into streams
(modalities), each stream absent at test time, and the cross-modal interactions it uses.

  missing_streams  accuracy with each stream absent (a learned mask token, or zeros): "hearing to
                   see" (Ngiam et al. 2011, "Multimodal Deep Learning"): train with all
                   modalities, test with fewer
  interactions     EMAP accuracy (Hessel & Lee 2020) and modality contribution (mmjax.quantify)
                   over two groups of streams, e.g. words | audio + video

A stream is a model input `name` with its companions `name_length`, `name_present` (the inputs of
mmjax.tasks.sequences); a stream is absent for an example when `name_present` is False. Both
evaluators read the 'logits' output; metrics are named {split}/accuracy_without_{stream}[_zeros],
{split}/emap_accuracy, {split}/contribution_... .
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain.python as grain
import jax
import numpy as np

from mmjax import quantify
from mmjax.errors import UserError
from mmjax.evaluate import embed
from mmjax.evaluate.builtin import empty, needs

HOWS = ("mask", "zeros")


@dataclasses.dataclass
class WithoutStream(grain.MapTransform):
  """An eval transform whose output has `stream` absent: how='mask' marks it absent
  ({stream}_present False: the model's learned mask token), how='zeros' zeroes its values."""
  base: grain.Transformation
  stream: str
  how: str = "mask"

  def map(self, element):
    """The base transform's output for one example, with the stream absent."""
    out = dict(embed.apply_transform(self.base, element))
    if self.how == "mask":
      out[f"{self.stream}_present"] = np.asarray(False)
    else:
      out[self.stream] = np.zeros_like(out[self.stream])
    return out


def _streams(example: dict) -> list[str]:
  """The streams of a transformed example: the keys with a `{key}_present` flag."""
  return [k for k in example if f"{k}_present" in example]


@needs(lambda settings: ("logits",))
def missing_streams(ctx, *, splits=None, streams: Sequence[str] | None = None,
                    how: Sequence[str] = ("mask",)) -> dict:
  """Accuracy of 'logits' on each split with each stream absent in turn ({split}/accuracy_
  without_{stream}; with how 'zeros', ..._zeros); streams: all streams of the inputs by default."""
  unknown = sorted(set(how) - set(HOWS))
  if unknown:
    raise UserError(f"missing_streams: how {unknown}; expected a subset of {list(HOWS)}")
  base = ctx.eval_transform()
  results = empty()
  for split in ctx.splits(splits):
    present = _streams(embed.apply_transform(base, ctx.source(split)[0]))
    if not present:
      raise UserError(f"missing_streams: the inputs of task {ctx.task.name!r} have no streams "
                       "(keys with a '<name>_present' flag)")
    names = present if streams is None else list(streams)
    if set(names) - set(present):
      raise UserError(f"missing_streams: streams {sorted(set(names) - set(present))} are not "
                       f"inputs; the inputs' streams are {present}")
    for stream in names:
      for h in how:
        out = ctx.embed(split, ("logits",), transform=WithoutStream(base, stream, h),
                        key=f"without_{stream}_{h}")
        suffix = "" if h == "mask" else f"_{h}"
        results["metrics"][f"{split}/accuracy_without_{stream}{suffix}"] = quantify.accuracy(
            out["logits"], out["label"])
  return results


def _member(key: str, group: Sequence[str]) -> bool:
  return any(key == s or key.startswith(f"{s}_") for s in group)


def _inputs(ctx, split: str, examples: int) -> dict[str, np.ndarray]:
  """The first `examples` examples of a split through the eval transform, stacked."""
  transform, source = ctx.eval_transform(), ctx.source(split)
  rows = [embed.apply_transform(transform, source[i]) for i in range(min(examples, len(source)))]
  return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


@needs(lambda settings: ("logits",))
def interactions(ctx, *, groups: Sequence[Sequence[str]], split: str | None = None,
                 examples: int = 512, block_size: int = 32, seed: int = 0) -> dict:
  """EMAP and modality contribution of the model over two groups of streams, on the first
  `examples` examples of `split` (default: the first eval split).

  groups: two lists of stream names (e.g. (("words",), ("audio", "video"))); an input belongs to
  a group with its `_length` / `_present` companions; inputs of neither group (streams the model
  does not read) go with the second. EMAP (mmjax.quantify.emap) costs examples^2
  forward passes. Metrics: {split}/emap_accuracy and {split}/emap_model_accuracy (the model on
  the same examples: equal for a model without cross-group interactions), and
  {split}/contribution_{without,mismatched}_{group}[_drop] (mmjax.quantify.modality_contribution).
  """
  if len(groups) != 2 or not all(groups):
    raise UserError(f"interactions: groups must be two non-empty lists of streams, got {groups!r}")
  split = split or ctx.splits()[0]
  inputs = _inputs(ctx, split, examples)
  labels = inputs.pop("label")
  fields = set(ctx.dataset.fields)
  a = {k: v for k, v in inputs.items() if _member(k, groups[0])}
  b = {k: v for k, v in inputs.items() if k not in a and k not in fields}   # the rest: groups[1]
  if not a or not any(_member(k, groups[1]) for k in b):
    raise UserError(f"interactions: groups {groups!r} must each name streams of the model inputs "
                    f"{sorted(set(inputs) - fields)}")
  model, task = ctx.model, ctx.task

  def f(variables, x, y):
    return model.apply(variables, *task.model_inputs({**x, **y}))   # (P, C) logits

  out = jax.jit(lambda v, x, y: quantify.emap(lambda p, q: f(v, p, q), x, y,
                                              block_size=block_size))(ctx.variables, a, b)
  names = tuple("+".join(g) for g in groups)
  results = empty()
  m = results["metrics"]
  m[f"{split}/emap_accuracy"] = quantify.accuracy(out.projection, labels)
  m[f"{split}/emap_model_accuracy"] = quantify.accuracy(out.logits, labels)
  parts = quantify.modality_contribution(
      lambda x, y: f(ctx.variables, x, y), a, b, labels, key=jax.random.key(seed), names=names)
  m.update({f"{split}/contribution_{k}": float(v) for k, v in parts.items() if k != "accuracy"})
  return results
