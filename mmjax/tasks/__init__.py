"""Training tasks, one module each, looked up by name: train.py and eval.py never name a task.

    task = tasks.get(config.task)          # a built-in name, or a dotted module path
    model = task.build_model(config)
    loss_fn = task.make_loss_fn(model, config, mesh)    # (params, batch) -> (loss, metrics)

| name | model | objective |
|---|---|---|
| `clip` | TwoTower (ViT or ConvNet + text transformer) | symmetric InfoNCE over the global batch |
| `siglip` | TwoTower | pairwise sigmoid loss over the global batch |
| `dcca` | two MLP view networks | deep CCA |
| `dccae` | DCCAE: MLP encoders and decoders per view | deep CCA + reconstruction |
| `bimodal_ae` | bimodal autoencoder | reconstruction of both views from both and from each |
| `fusion` | two towers + any fusion module + a classifier head | cross-entropy |
| `sequences` | unaligned streams: unimodal, late, early (DTW, OT), TFN, LMF, MulT, MTAG | cross-entropy |

A task of your own is a module that defines `TASK = mmjax.tasks.Task(...)` (see
mmjax.tasks.common.Task for its fields); name it in the config by its dotted path
(`config.task = "my_pkg.my_task"`) and train.py trains it, with no change to mmjax.
"""
from __future__ import annotations

from mmjax import _lookup
from mmjax.tasks.common import Task

BUILTIN = ("clip", "siglip", "dcca", "dccae", "bimodal_ae", "fusion", "sequences")

__all__ = ["Task", "get", "BUILTIN"]


def get(name: str) -> Task:
  """The Task of a built-in name or of a module path whose module defines TASK.

  Raises ValueError listing the built-in tasks for an unknown name, a module that cannot be
  imported, or a module without a TASK.
  """
  return _lookup.resolve(name, {n: f"mmjax.tasks.{n}" for n in BUILTIN}, "TASK", "task", Task)
