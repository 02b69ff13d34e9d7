"""What a task is (the Task dataclass) and the pieces several tasks share.

A task module defines `TASK = Task(...)`: the functions train.py and eval.py call, each a plain
function of the config (an ml_collections.ConfigDict) and arrays. Nothing else in mmjax knows which
tasks exist.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from mmjax import parallel
from mmjax.data import datasets, tokenizers
from mmjax.errors import UserError

Batch = dict[str, Any]
"""@private A batch: a dict of (B, ...) arrays, as the input pipeline gives it."""
LossFn = Callable[[Any, Batch], tuple[jax.Array, dict[str, jax.Array]]]
"""@private (params, batch) -> (scalar loss, {name: scalar metric})."""


def no_tokenizer(config) -> None:
  """For tasks without text: no tokenizer."""
  del config


def no_evals(config, dataset) -> dict:
  """For tasks without default evaluators: none (the config names them)."""
  del config, dataset
  return {}


def dataset_transform(config, dataset: datasets.Dataset, *, train: bool, tokenizer):
  """The dataset's own transform at config.dataset.image_size (what most tasks want)."""
  kwargs = {"image_size": config.dataset.image_size} if "image_size" in config.dataset else {}
  return dataset.transform(train=train, tokenizer=tokenizer, **kwargs)


@dataclasses.dataclass(frozen=True)
class Task:
  """A training task: how to build, feed, train and evaluate one kind of model.

  Attributes:
    name: the task's name (for messages and metrics.json).
    build_model: config -> the Flax module, sized by config.model.
    example_batch: (config, batch_size) -> zeros shaped like one training batch, {key: array}.
    model_inputs: batch -> the positional arguments of model.apply (and model.init).
    make_loss_fn: (model, config, mesh) -> loss_fn(params, batch) -> (loss, {name: metric}),
      traced inside the jitted, sharded train step; batches are global arrays split over the
      mesh's ('data', 'fsdp') axes.
    outputs: model -> {name: fn(variables, batch) -> (B, ...) array}: what evaluators embed
      ('image' and 'text' for two towers, 'view1' / 'view2' for two views, 'logits' ...).
    tokenizer: config -> the text tokenizer, or None for tasks without text.
    transform: (config, dataset, train=, tokenizer=) -> the grain transform of one example
      (default: the dataset's own).
    evals: (config, dataset) -> {name: evaluator settings}, used when the config names none.
  """
  name: str
  build_model: Callable[[Any], nn.Module]
  example_batch: Callable[[Any, int], Batch]
  model_inputs: Callable[[Batch], tuple]
  make_loss_fn: Callable[[nn.Module, Any, Any], LossFn]
  outputs: Callable[[nn.Module], Mapping[str, Callable]]
  tokenizer: Callable[[Any], Any] = no_tokenizer
  transform: Callable[..., Any] = dataset_transform
  evals: Callable[[Any, datasets.Dataset], dict] = no_evals

  def init_fn(self, model: nn.Module, config) -> Callable:
    """rng -> model.init(rng, *inputs of an example batch): the variables for config's shapes."""
    inputs = self.model_inputs(self.example_batch(config, 1))
    return lambda rng: model.init(rng, *inputs)


def make_tokenizer(config):
  """config.tokenizer: 'byte', 'word' (over the vocabulary of the dataset config.vocabulary
  names, by default config.dataset.name) or 'clip' (BPE from config.bpe_path or an installed
  package), with config.context_length."""
  kind, length = config.tokenizer, config.context_length
  if kind == "byte":
    return tokenizers.ByteTokenizer(context_length=length)
  if kind == "word":
    name = config.get("vocabulary") or config.dataset.name
    words = datasets.get(name).vocabulary
    if not words:
      raise UserError(f"tokenizer 'word' needs a closed vocabulary, and dataset {name!r} (config "
                       "vocabulary or dataset.name) has none; use tokenizer 'byte' or 'clip'")
    return tokenizers.WordTokenizer(words, context_length=length)
  if kind == "clip":
    try:
      return tokenizers.ClipTokenizer(config.get("bpe_path") or None, context_length=length)
    except FileNotFoundError as e:
      raise UserError(f"tokenizer 'clip' (config.bpe_path={config.get('bpe_path')!r}): {e}") from e
  raise UserError(f"unknown tokenizer {kind!r}; expected 'byte', 'word' or 'clip'")


def model_kwargs(model_config) -> dict:
  """dtype, implementation, remat and scan of config.model, as the encoders take them."""
  m = model_config
  return dict(dtype=jnp.dtype(m.get("dtype", "float32")),
              implementation=m.get("implementation") or None,
              remat=m.get("remat", "none"), scan=m.get("scan", False))


def text_overrides(config) -> dict:
  """The text tower reads config.context_length tokens (unless model.text says otherwise); with a
  tokenizer of a closed vocabulary, its vocabulary size is the tokenizer's."""
  vocab = {}
  if config.get("tokenizer") == "word":
    vocab = {"vocab_size": make_tokenizer(config).vocab_size}
  return {"context_length": config.context_length, **vocab, **dict(config.model.get("text", {}))}


def image_text_batch(config, batch_size: int) -> Batch:
  """Zeros shaped like an image-caption batch: image (B, S, S, 3) uint8 (the towers normalise it),
  tokens (B, L), label (B,)."""
  s = config.dataset.image_size
  return {"image": np.zeros((batch_size, s, s, 3), np.uint8),
          "tokens": np.zeros((batch_size, config.context_length), np.int32),
          "label": np.zeros((batch_size,), np.int32)}


def two_view_batch(config, batch_size: int) -> Batch:
  """Zeros shaped like a two-view batch: view1, view2 (B, S, S, 1), label (B,)."""
  s = config.dataset.get("image_size", 28)
  view = np.zeros((batch_size, s, s, 1), np.float32)
  return {"view1": view, "view2": view, "label": np.zeros((batch_size,), np.int32)}


def flat_views(batch: Batch) -> tuple[jax.Array, jax.Array]:
  """(view1, view2) flattened to (B, S * S) feature vectors."""
  return tuple(jnp.reshape(batch[k], (batch[k].shape[0], -1)) for k in ("view1", "view2"))


def classifier_loss_fn(model, model_inputs) -> LossFn:
  """Mean softmax cross-entropy of model.apply(params, *model_inputs(batch)) (B, C) logits against
  batch['label']; metric: accuracy."""

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, *model_inputs(batch))     # (B, C)
    labels = batch["label"]
    loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
  return loss_fn


def global_contrastive(loss, mesh):
  """loss(x, y, scale, bias, axis_name=...) run on each device's batch shard inside shard_map,
  with negatives from the whole global batch: (B, E), (B, E), (), () -> ()."""
  spec = P(parallel.BATCH_AXES)
  fn = functools.partial(loss, axis_name=parallel.BATCH_AXES)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec, P(), P()), out_specs=P(),
                       axis_names=set(parallel.BATCH_AXES))
