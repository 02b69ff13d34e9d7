"""SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training"): the CLIP two-tower
model trained with the pairwise sigmoid loss over the global batch, with a learnt logit bias.

    python train.py --config configs/shapes_siglip.py --workdir /tmp/shapes_siglip

Everything else (model, data, evaluators) as the clip task.
"""
from __future__ import annotations

import dataclasses
import functools

from mmjax import losses
from mmjax.tasks import clip, common


def make_loss_fn(model, config, mesh):
  """The sigmoid loss over every (image, text) pair of the global batch."""
  del config
  return clip.contrastive_loss_fn(model, common.global_contrastive(losses.siglip_loss, mesh))


TASK = dataclasses.replace(clip.TASK, name="siglip",
                           build_model=functools.partial(clip.build_model, loss="siglip"),
                           make_loss_fn=make_loss_fn)
"""The SigLIP task."""
