"""A task and an evaluator from outside mmjax, named in a config by dotted path: the test that adding
a task takes one new file and its config (tests/vse_task_config.py), with no edit to mmjax.

The task: the CLIP two-tower model trained with the VSE++ hinge loss (Faghri et al. 2018, hardest
negative in the batch). The evaluator: the mean cosine of each eval split's matching pairs.
"""
import dataclasses

import numpy as np

from mmjax import losses
from mmjax.evaluate import builtin
from mmjax.tasks import clip


def make_loss_fn(model, config, mesh):
  """VSE++ hinge loss over the global batch (XLA gathers it; no shard_map needed)."""
  del mesh
  def loss_fn(params, batch):
    out = model.apply({"params": params}, *clip.model_inputs(batch))
    loss = losses.hinge_loss(out.image, out.text, margin=config.margin, hardest_negative=True)
    return loss, {"scale": out.scale}
  return loss_fn


@builtin.needs(lambda settings: ("image", "text"))
def pair_cosine(ctx, *, splits=None):
  """{split}/pair_cosine: mean cosine of each image with its own caption."""
  results = builtin.empty()
  for split in ctx.splits(splits):
    out = ctx.embed(split, ("image", "text"))
    results["metrics"][f"{split}/pair_cosine"] = float(np.mean(np.sum(out["image"] * out["text"],
                                                                      axis=1)))
  return results


TASK = dataclasses.replace(clip.TASK, name="vse", make_loss_fn=make_loss_fn)
