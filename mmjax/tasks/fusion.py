"""Supervised fusion: an image tower and a caption tower, their features fused by any fusion module
of mmjax.models.fusion, then class logits, trained with cross-entropy on the dataset's label.

    python train.py --config configs/shapes_fusion.py --workdir /tmp/shapes_fusion
    python train.py --config configs/shapes_fusion.py --workdir /tmp/f \
        --config.model.fusion.type=gated --config.model.fusion.features=64

config.model.fusion: dict(type=NAME, **arguments of that module), NAME a short name of FUSIONS
(e.g. 'lowrank': LowRankFusion, Liu et al. 2018) or a class name of mmjax.models.fusion; the
arguments are the module's own (out_dim and rank for LowRankFusion, features for GatedFusion, ...).
'late' fusion is decision-level: its out_dim is the number of classes and its output the logits.
config.model.num_classes: the label's classes; preset, image, text: the towers, as for clip.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from mmjax.errors import UserError
from mmjax.models import fusion as fusion_lib
from mmjax.models.text import TextTransformer
from mmjax.models.two_tower import PRESETS, image_encoder
from mmjax.tasks import clip, common

FUSIONS = {"concat": "ConcatFusion", "nonlinear": "NonlinearFusion", "late": "LateFusion",
           "additive": "AdditiveFusion", "multiplicative": "MultiplicativeFusion",
           "bilinear": "BilinearFusion", "tensor": "TensorFusion", "lowrank": "LowRankFusion",
           "polynomial": "PolynomialFusion", "gated": "GatedFusion"}
"""Short names of the fusion modules that take a list of (B, d_i) features."""


def fusion_module(spec) -> nn.Module:
  """The fusion module of a spec dict(type=NAME, **its arguments); ValueError for unknown names."""
  spec = dict(spec)
  kind = spec.pop("type", None)
  name = FUSIONS.get(kind, kind)
  cls = getattr(fusion_lib, name, None) if isinstance(name, str) else None
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or name in ("ModalityShift",
                                                                            "MAG", "FiLM"):
    raise UserError(f"unknown fusion type {kind!r} (config.model.fusion.type); expected one of "
                     f"{sorted(FUSIONS)} or a class name {sorted(FUSIONS.values())}")
  try:
    return cls(**spec, name="fusion")
  except TypeError as e:
    raise UserError(f"config.model.fusion {dict(type=kind, **spec)}: {e}") from e


class FusionClassifier(nn.Module):
  """images (B, H, W, 3), tokens (B, L) -> class logits (B, num_classes): each tower's features,
  fused by the module `fusion` names (a dict(type=NAME, **arguments), see fusion_module), then a
  ReLU and a Dense head (decision-level fusion returns the logits itself)."""
  image_encoder: nn.Module
  text_encoder: nn.Module
  fusion: Any
  num_classes: int

  def __post_init__(self):
    if isinstance(self.fusion, Mapping):   # kept as sorted (key, value) pairs: modules are hashed
      object.__setattr__(self, "fusion", tuple(sorted(dict(self.fusion).items())))
    super().__post_init__()

  @nn.compact
  def __call__(self, images, tokens):
    feats = [self.image_encoder(images), self.text_encoder(tokens)]      # (B, d_image), (B, d_text)
    module = fusion_module(dict(self.fusion))
    fused = module(feats)
    if isinstance(fused, tuple):        # GatedFusion: (h, gates)
      fused = fused[0]
    if isinstance(module, fusion_lib.LateFusion):
      return fused                      # already (B, num_classes) logits
    return nn.Dense(self.num_classes, name="head")(nn.relu(fused))     # (B, d) -> (B, C)


def build_model(config) -> FusionClassifier:
  """The preset's towers (with config's overrides) and config.model.fusion."""
  m = config.model
  kw = common.model_kwargs(m)
  text = TextTransformer(**{**PRESETS[m.preset]["text"], **kw, **common.text_overrides(config)})
  return FusionClassifier(image_encoder(m.preset, dict(m.get("image", {})), **kw), text,
                          fusion=dict(m.fusion), num_classes=m.num_classes)


def outputs(model) -> dict:
  """'logits': (B, num_classes)."""
  return {"logits": lambda v, b: model.apply(v, *clip.model_inputs(b))}


def make_loss_fn(model, config, mesh):
  """Mean cross-entropy of the logits against batch['label']; metric: accuracy."""
  del config, mesh
  return common.classifier_loss_fn(model, clip.model_inputs)


def evals(config, dataset) -> dict:
  """Accuracy on the eval splits (with per-class accuracy and the confusion in eval.py)."""
  del config, dataset
  return {"accuracy": {"type": "accuracy", "every": 0}}


TASK = common.Task(
    name="fusion", build_model=build_model, example_batch=common.image_text_batch,
    model_inputs=clip.model_inputs, make_loss_fn=make_loss_fn, outputs=outputs,
    tokenizer=common.make_tokenizer, evals=evals)
"""The supervised fusion task."""
