"""Evaluators named in the config, each with its settings and a schedule (as big_vision's).

    config.evals = dict(
        zero_shot=dict(type="zero_shot", splits=("test", "test_unseen"), every=500),
        probe=dict(type="probe", every=None),                  # eval.py only
        mine=dict(type="my_pkg.my_evals.my_evaluator", every=1000))

every: N > 0 runs it every N steps and after the last one, 0 after the last step only, None never
during training; eval.py runs them all. type: a built-in evaluator (BUILTIN) or the dotted path of
a function `fn(ctx, **settings) -> results`, ctx a mmjax.evaluate.context.Context. Without
config.evals, the task's defaults (Task.evals) are used. Results are a dict {'metrics': {name:
float}, 'per_class_accuracy': {split: {class: float}}, 'confusion_matrix': {split: (C, C) list},
'plots': [paths]}; the metrics of all evaluators are merged (a name given twice is an error).

The built-in evaluators are in mmjax.evaluate.builtin and mmjax.evaluate.interactions (streams
absent at test time, EMAP and modality contribution); settings they do not take are errors
raised when the config is read, before any data is prepared.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

from mmjax import _lookup
from mmjax.errors import UserError
from mmjax.evaluate import builtin, embed

BUILTIN = {**{name: f"mmjax.evaluate.builtin.{name}" for name in builtin.EVALUATORS},
           **{name: f"mmjax.evaluate.interactions.{name}"
              for name in ("missing_streams", "interactions")}}


def get(kind: str) -> Callable:
  """The evaluator function of a built-in type or a dotted path 'pkg.module.function'."""
  return _lookup.resolve(kind, BUILTIN, None, "evaluator type", None)


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One configured evaluator: its name in the config, function, schedule and settings."""
  name: str
  fn: Callable
  every: int | None
  settings: dict

  def due(self, step: int, last_step: int) -> bool:
    """Whether train.py runs it after `step` (of a run that ends at last_step)."""
    if self.every is None:
      return False
    return step == last_step or (self.every > 0 and step % self.every == 0)

  def __call__(self, ctx) -> dict:
    return self.fn(ctx, **self.settings)


def _check_settings(name: str, fn: Callable, settings: dict) -> None:
  params = inspect.signature(fn).parameters
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    return
  accepted = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
  unknown = sorted(set(settings) - set(accepted))
  if unknown:
    raise UserError(f"config.evals.{name}: {fn.__name__} takes no setting {unknown}; it takes "
                     f"{accepted} (and 'type', 'every')")


def _check_outputs(name: str, fn: Callable, settings: dict, available) -> None:
  needs = getattr(fn, "needs", None)
  missing = sorted(set(needs(settings) if needs else ()) - set(available))
  if missing:
    raise UserError(f"config.evals.{name}: {fn.__name__} needs the task outputs {missing}, and "
                     f"the task has {sorted(available)}")


def from_config(config, task, dataset, *, use_config: bool = True) -> list[Evaluator]:
  """The evaluators of config.evals (or, without it or with use_config False, the task's
  defaults), checked: known types, settings they take, outputs the task has, every None or >= 0."""
  specs = config.get("evals") if use_config and config.get("evals") is not None else None
  if specs is None:
    specs = task.evals(config, dataset)
  available = task.outputs(None)       # output names only: no model needed
  out = []
  for name, spec in dict(specs).items():
    spec = dict(spec)
    kind = spec.pop("type", name)
    every = spec.pop("every", 0)
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 0):
      raise UserError(f"config.evals.{name}.every must be an int >= 0 (0: after the last step) or "
                       f"None (eval.py only), got {every!r}")
    fn = get(kind)
    _check_settings(name, fn, spec)
    _check_outputs(name, fn, spec, available)
    out.append(Evaluator(name, fn, every, spec))
  return out


def run(evaluators, ctx) -> dict:
  """The merged results of the evaluators on ctx (with ctx.params); embed.Interrupted when
  ctx.should_stop() turns true between two evaluators or two batches."""
  results = builtin.empty()
  for ev in evaluators:
    if ctx.should_stop is not None and ctx.should_stop():
      raise embed.Interrupted(f"stopped before evaluator {ev.name}")
    part = ev(ctx)
    clash = sorted(set(part.get("metrics", {})) & set(results["metrics"]))
    if clash:
      raise UserError(f"config.evals.{ev.name} reports metrics another evaluator reported: "
                       f"{clash[:5]}; give it other splits or settings")
    results["metrics"].update(part.get("metrics", {}))
    results["per_class_accuracy"].update(part.get("per_class_accuracy", {}))
    results["confusion_matrix"].update(part.get("confusion_matrix", {}))
    results["plots"] += part.get("plots", [])
  return results
