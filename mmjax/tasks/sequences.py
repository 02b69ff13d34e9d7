"""Classification of unaligned multimodal sequences (mmjax.data.sequences: audio, video and word
streams at different rates, each example with its own offsets and time warps) by a model of
mmjax.models.sequence or MTAG, trained with cross-entropy.

    python train.py --config configs/sequences.py:mult --workdir /tmp/seq_mult
    python train.py --config configs/sequences.py:early_dtw,aligned --workdir /tmp/seq_early

config.model.type (MODELS):
  unimodal   one stream (model.streams = (name,)): a self-attention encoder, pooled
  late       a unimodal branch per stream, logits summed (additive, decision level)
  early      streams averaged onto the reference stream's clock (model.align: 'dtw', 'ot' or
             'none', mmjax.align.align_to_reference on the dataset's content features), then a
             per-step MLP: early fusion after explicit alignment
  tfn, lmf   pooled streams fused by a tensor (Zadeh et al. 2017) or low-rank (Liu et al. 2018)
             product
  mult       crossmodal transformers for every ordered pair of streams (Tsai et al. 2019)
  mtag       modal-temporal attention graph with edge pruning (Yang et al. 2021)
config.model: streams (the streams read: fewer is "train with fewer modalities"), width, depth,
num_heads, num_classes; align, reference, cost (early); keep_edges (mtag). config.dataset.
stream_dropout: the rate at which training marks a stream absent (the learned mask token then
stands for it; evaluation with a stream absent: the missing_streams evaluator).
"""
from __future__ import annotations

import numpy as np

from mmjax import align
from mmjax.data import sequences as data
from mmjax.errors import UserError
from mmjax.models import sequence
from mmjax.models.mtag import MTAG
from mmjax.tasks import common

MODELS = ("unimodal", "late", "early", "tfn", "lmf", "mult", "mtag")


def build_model(config):
  """The model config.model.type names, over config.model.streams."""
  m = config.model
  if m.positions not in ("step", "time") or not m.time_scale > 0:  # a float: ml_collections casts
    raise UserError(f"config.model.positions={m.positions!r}, time_scale={m.time_scale!r}: "
                    "expected positions 'step' (the step index) or 'time' (the normalised time) "
                    "and time_scale > 0")
  kw = dict(streams=tuple(m.streams), num_classes=m.num_classes, width=m.width, depth=m.depth,
            num_heads=m.num_heads, vocab_sizes=(("words", data.VOCAB_SIZE),),
            positions=m.positions, time_scale=float(m.time_scale))
  unknown = sorted(set(kw["streams"]) - set(data.STREAMS))
  if unknown or not kw["streams"]:
    raise UserError(f"config.model.streams={tuple(m.streams)}: expected a non-empty subset of "
                    f"{data.STREAMS}")
  kind = m.type
  if kind == "unimodal":
    if len(kw["streams"]) != 1:
      raise UserError(f"model.type 'unimodal' reads one stream; config.model.streams="
                      f"{tuple(m.streams)}")
    return sequence.Unimodal(**kw)
  if kind == "late":
    return sequence.LateFusion(**kw)
  if kind == "early":
    return sequence.EarlyFusion(align=m.align, aligner=align.align_to_reference,
                                features_fn=data.content_features, reference=m.reference,
                                cost=m.cost, **kw)
  if kind in ("tfn", "lmf"):
    return sequence.PooledFusion(fusion="tensor" if kind == "tfn" else "lowrank", **kw)
  if kind == "mult":
    return sequence.MulT(**kw)
  if kind == "mtag":
    graph = MTAG(num_layers=m.depth, num_heads=m.num_heads, width=m.width,
                 keep_edges=m.keep_edges, modalities=kw["streams"])
    return sequence.GraphClassifier(graph=graph, **kw)
  raise UserError(f"unknown config.model.type {kind!r}; expected one of {list(MODELS)}")


def _aligned(config) -> bool:
  kwargs = dict(config.dataset.get("builder_kwargs", {}))
  return bool(kwargs.get("aligned", kwargs.get("config") == "aligned"))


def example_batch(config, batch_size: int) -> common.Batch:
  """Zeros shaped like a batch of the configured variant (unaligned or aligned), with 'label'."""
  batch = data.example_batch(batch_size, aligned=_aligned(config))
  return {**batch, "label": np.zeros((batch_size,), np.int32)}


def model_inputs(batch) -> tuple:
  """The model reads the batch dict itself (streams, lengths, presence; other keys ignored)."""
  return (batch,)


def transform(config, dataset, *, train: bool, tokenizer):
  """The dataset's transform, with config.dataset.stream_dropout when training."""
  return dataset.transform(train=train, tokenizer=tokenizer,
                           stream_dropout=config.dataset.get("stream_dropout", 0.0))


def outputs(model) -> dict:
  """'logits': (B, num_classes)."""
  return {"logits": lambda v, b: model.apply(v, b)}


def make_loss_fn(model, config, mesh):
  """Mean cross-entropy of the logits against batch['label']; metric: accuracy."""
  del config, mesh
  return common.classifier_loss_fn(model, model_inputs)


def evals(config, dataset) -> dict:
  """Accuracy (with the confusion in eval.py), accuracy with each stream absent, and EMAP and
  modality contribution of words against audio + video, after the last step."""
  del dataset
  groups = (("words",), tuple(s for s in config.model.streams if s != "words"))
  out = {"accuracy": {"type": "accuracy", "every": 0},
         "missing_streams": {"type": "missing_streams", "every": 0, "how": ("mask", "zeros")}}
  if "words" in config.model.streams and groups[1]:
    out["interactions"] = {"type": "interactions", "every": 0, "groups": groups, "examples": 256}
  return out


TASK = common.Task(
    name="sequences", build_model=build_model, example_batch=example_batch,
    model_inputs=model_inputs, make_loss_fn=make_loss_fn, outputs=outputs, transform=transform,
    evals=evals)
"""Sequence classification on unaligned multimodal streams."""
