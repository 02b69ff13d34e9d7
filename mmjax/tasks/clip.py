"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"): an image tower and a text tower trained with the symmetric InfoNCE loss over the
global batch (every other pair of every device is a negative).

    python train.py --config configs/shapes_clip.py --workdir /tmp/shapes_clip

config.model: preset ('tiny', 'S/16', 'B/32', 'B/16', 'L/14'), image / text overrides of its towers
(image.arch='cnn' for a ConvNet), dtype, implementation, remat, scan. config.lock: '' / 'image' /
'text' (LiT). config.loss_block_size > 0: the blockwise loss (chunked_clip_loss), which never holds
the B x B logits. Evaluators by default: zero-shot classification (datasets with class names) and
image <-> text retrieval (datasets with captions) on config.dataset.eval_splits.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp

from mmjax import losses
from mmjax.models.two_tower import two_tower
from mmjax.tasks import common


def build_model(config, *, loss: str = "clip"):
  """The TwoTower of config.model.preset with config's tower overrides; `loss` sets the logit
  scale's start (and SigLIP's bias)."""
  m = config.model
  return two_tower(m.preset, loss=loss, lock=config.get("lock") or None,
                   image_overrides=dict(m.get("image", {})),
                   text_overrides=common.text_overrides(config), **common.model_kwargs(m))


def model_inputs(batch) -> tuple:
  """(images (B, S, S, 3), tokens (B, L))."""
  return batch["image"], batch["tokens"]


def outputs(model) -> dict:
  """'image': images -> (B, E) unit embeddings; 'text': tokens -> (B, E)."""
  return {"image": lambda v, b: model.apply(v, b["image"], method="encode_image"),
          "text": lambda v, b: model.apply(v, b["tokens"], method="encode_text")}


def contrastive_loss_fn(model, contrastive):
  """(params, batch) -> (contrastive(image, text, scale, bias), {'scale'}) of a TwoTower."""
  def loss_fn(params, batch):
    out = model.apply({"params": params}, *model_inputs(batch))
    bias = jnp.zeros(()) if out.bias is None else out.bias
    return contrastive(out.image, out.text, out.scale, bias), {"scale": out.scale}
  return loss_fn


def make_loss_fn(model, config, mesh):
  """CLIP's loss over the global batch (blockwise when config.loss_block_size > 0)."""
  block = config.get("loss_block_size", 0)
  base = functools.partial(losses.chunked_clip_loss, block_size=block) if block else losses.clip_loss
  contrastive = common.global_contrastive(
      lambda x, y, scale, bias, axis_name: base(x, y, scale, axis_name=axis_name), mesh)
  return contrastive_loss_fn(model, contrastive)


def evals(config, dataset) -> dict:
  """Zero-shot (if the dataset has class names) and retrieval (if it has captions), at the end."""
  del config
  out = {}
  if dataset.class_names:
    out["zero_shot"] = {"type": "zero_shot", "every": 0}
  if dataset.has_captions:
    out["retrieval"] = {"type": "retrieval", "every": 0}
  return out


TASK = common.Task(
    name="clip", build_model=build_model, example_batch=common.image_text_batch,
    model_inputs=model_inputs, make_loss_fn=make_loss_fn, outputs=outputs,
    tokenizer=common.make_tokenizer, evals=evals)
"""The CLIP task."""
