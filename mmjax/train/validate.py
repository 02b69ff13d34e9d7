"""The trainer's config checked in one pass, before anything is prepared, compiled or downloaded.

    validate.check_config(config)                    # types and ranges of every trainer field
    validate.check_batch(config.batch_size, mesh)    # the batch splits over processes and devices

Each raises mmjax.errors.UserError listing every problem found, each naming the field, its value
and what is expected. Task, dataset, evaluator, preset and tokenizer names are checked where they
are looked up (mmjax.tasks.get, mmjax.data.datasets.get, mmjax.evaluate.evaluators.from_config,
Task.build_model), which train.py also calls before any data is prepared.
"""
from __future__ import annotations

import math
import numbers

from mmjax.errors import UserError

_INT, _NUMBER = "an int", "a number"


def _int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


# field: (kind, test of the value, what is expected); a field the config lacks is not checked
# (the trainer has a default for it) unless it is in REQUIRED.
RULES = {
    "batch_size": (_INT, lambda v: v > 0, "> 0 (the global batch)"),
    "total_steps": (_INT, lambda v: v > 0, "> 0"),
    "lr": (_NUMBER, lambda v: v >= 0, ">= 0"),
    "warmup_steps": (_INT, lambda v: v >= 0, ">= 0"),
    "end_lr_factor": (_NUMBER, lambda v: v >= 0, ">= 0"),
    "weight_decay": (_NUMBER, lambda v: v >= 0, ">= 0"),
    "b1": (_NUMBER, lambda v: 0 <= v < 1, "in [0, 1)"),
    "b2": (_NUMBER, lambda v: 0 <= v < 1, "in [0, 1)"),
    "eps": (_NUMBER, lambda v: v > 0, "> 0"),
    "grad_clip": (_NUMBER, lambda v: v >= 0, ">= 0 (0: no clipping)"),
    "grad_accum": (_INT, lambda v: v >= 1, ">= 1"),
    "log_every": (_INT, lambda v: v >= 1, ">= 1"),
    "checkpoint_every": (_INT, lambda v: v >= 1, ">= 1"),
    "keep_checkpoints": (_INT, lambda v: v >= 1, ">= 1"),
    "eval_batch_size": (_INT, lambda v: v >= 1, ">= 1"),
    "worker_count": (_INT, lambda v: v >= 0, ">= 0"),
    "seed": (_INT, lambda v: True, "an int"),
    "loss_block_size": (_INT, lambda v: v >= 0, ">= 0 (0: the plain loss)"),
    "context_length": (_INT, lambda v: v >= 1, ">= 1"),
    "lock": (None, lambda v: v in ("", "image", "text"), "'', 'image' or 'text'"),
    "dataset.image_size": (_INT, lambda v: v >= 1, ">= 1"),
    "dataset.train_split": (None, lambda v: isinstance(v, str) and v, "a split name"),
    "dataset.eval_splits": (None, lambda v: isinstance(v, (tuple, list))
                            and all(isinstance(s, str) and s for s in v),
                            "a tuple of split names"),
    "mesh.data": (_INT, lambda v: v == -1 or v >= 1, "-1 (the remaining devices) or >= 1"),
    "mesh.fsdp": (_INT, lambda v: v == -1 or v >= 1, "-1 (the remaining devices) or >= 1"),
    "mesh.tensor": (_INT, lambda v: v == -1 or v >= 1, "-1 (the remaining devices) or >= 1"),
    "model.remat": (None, lambda v: v in ("none", "full", "dots"), "'none', 'full' or 'dots'"),
    "model.implementation": (None, lambda v: v in ("", "xla", "cudnn"), "'', 'xla' or 'cudnn'"),
    "model.dtype": (None, lambda v: v in ("float32", "bfloat16", "float16"),
                    "'float32', 'bfloat16' or 'float16'"),
}
REQUIRED = ("task", "batch_size", "total_steps", "lr", "dataset.name", "dataset.train_split")


def _lookup(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if node is None or not hasattr(node, "get") or part not in node:
      return _MISSING
    node = node[part]
  return node


_MISSING = object()


def problems(config) -> list[str]:
  """'config.FIELD=VALUE: expected ...' for every trainer field out of type or range."""
  out = [f"config.{f} is missing" for f in REQUIRED if _lookup(config, f) is _MISSING]
  for field, (kind, ok, expected) in RULES.items():
    value = _lookup(config, field)
    if value is _MISSING:
      continue
    right_kind = kind is None or (_int(value) if kind == _INT else _number(value))
    if not right_kind or not ok(value):
      what = f"{kind} {expected}" if kind else expected
      out.append(f"config.{field}={value!r}: expected {what}")
  return out


def check_config(config) -> None:
  """UserError listing every trainer field of config out of type or range (see RULES)."""
  found = problems(config)
  if found:
    raise UserError(f"{len(found)} config problem(s): " + "; ".join(found))


def check_batch(batch_size: int, mesh, process_count: int | None = None) -> None:
  """UserError unless batch_size splits evenly over the processes and over the mesh's batch
  devices ('data' x 'fsdp')."""
  import jax  # pylint: disable=import-outside-toplevel
  processes = jax.process_count() if process_count is None else process_count
  devices = mesh.shape["data"] * mesh.shape["fsdp"]
  for count, what in ((processes, "processes"), (devices, "batch devices of the mesh "
                                                          f"(data x fsdp = {mesh.shape['data']} x "
                                                          f"{mesh.shape['fsdp']})")):
    if batch_size % count:
      lower, upper = batch_size // count * count, -(-batch_size // count) * count
      raise UserError(f"config.batch_size={batch_size} does not split over the {count} {what}; "
                      f"use a multiple of {count}, e.g. {lower or upper} or {upper}")
