"""Training tasks: for each config.task, the model, an example batch for init, and the loss.

  clip / siglip   TwoTower on image-text pairs, contrastive loss over the global batch
  dcca            two MLP encoders on two views, deep CCA loss (Andrew et al. 2013)
  fusion          image and caption towers fused (low-rank fusion, Liu et al. 2018) -> class logits

A loss function maps (params, batch) to (loss, metrics); batches are dicts of global arrays.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from mmjax import losses, parallel
from mmjax.data import tokenizers
from mmjax.models import fusion as fusion_lib
from mmjax.models.mlp import MlpEncoder
from mmjax.models.text import TextTransformer
from mmjax.models.two_tower import PRESETS, image_encoder, two_tower

TASKS = ("clip", "siglip", "dcca", "fusion")


def _vocabulary(name: str) -> tuple[str, ...]:
  if name == "shapes":
    from mmjax.data.shapes import VOCABULARY  # pylint: disable=import-outside-toplevel
    return VOCABULARY
  raise ValueError(f"unknown vocabulary {name!r} for tokenizer 'word'; expected 'shapes'")


def make_tokenizer(config):
  """config.tokenizer: 'byte', 'word' (over the vocabulary config.vocabulary names) or 'clip'."""
  if config.tokenizer == "byte":
    return tokenizers.ByteTokenizer(context_length=config.context_length)
  if config.tokenizer == "word":
    return tokenizers.WordTokenizer(_vocabulary(config.get("vocabulary", "shapes")),
                                    context_length=config.context_length)
  if config.tokenizer == "clip":
    return tokenizers.ClipTokenizer(config.get("bpe_path") or None,
                                    context_length=config.context_length)
  raise ValueError(f"unknown tokenizer {config.tokenizer!r}; expected 'byte', 'word' or 'clip'")


def _model_kwargs(m):
  return dict(dtype=jnp.dtype(m.dtype), implementation=m.get("implementation") or None,
              remat=m.get("remat", "none"), scan=m.get("scan", False))


class TwoViewMlp(nn.Module):
  """Deep CCA's two view networks f(x) and g(y): flattened views -> (B, out_dim) each."""
  hidden: tuple[int, ...]
  out_dim: int

  @nn.compact
  def __call__(self, view1, view2):
    flat = lambda v: v.reshape(v.shape[0], -1)  # noqa: E731
    return (MlpEncoder(self.hidden, self.out_dim, name="f")(flat(view1)),
            MlpEncoder(self.hidden, self.out_dim, name="g")(flat(view2)))


class FusionClassifier(nn.Module):
  """Image tower and caption tower, low-rank fused (LMF), then class logits."""
  image_encoder: nn.Module
  text_encoder: nn.Module
  num_classes: int
  rank: int = 4
  width: int = 64

  @nn.compact
  def __call__(self, images, tokens):
    feats = [self.image_encoder(images), self.text_encoder(tokens)]
    fused = fusion_lib.LowRankFusion(self.width, self.rank, name="fusion")(feats)
    return nn.Dense(self.num_classes, name="head")(nn.relu(fused))


def _text_overrides(config) -> dict:
  """The text tower reads config.context_length tokens (unless model.text says otherwise); with
  the word tokenizer its vocabulary is the tokenizer's."""
  vocab = ({"vocab_size": make_tokenizer(config).vocab_size} if config.get("tokenizer") == "word"
           else {})
  return {"context_length": config.context_length, **vocab, **dict(config.model.get("text", {}))}


def build_model(config) -> nn.Module:
  """The Flax module of config.task: a TwoTower (clip, siglip), TwoViewMlp (dcca) or
  FusionClassifier (fusion), sized by config.model."""
  m = config.model
  if config.task in ("clip", "siglip"):
    return two_tower(m.preset, loss=config.task, lock=config.get("lock") or None,
                     image_overrides=dict(m.get("image", {})), text_overrides=_text_overrides(config),
                     **_model_kwargs(m))
  if config.task == "dcca":
    return TwoViewMlp(tuple(m.hidden), m.out_dim)
  if config.task == "fusion":
    preset = PRESETS[m.preset]
    kw = _model_kwargs(m)
    return FusionClassifier(image_encoder(m.preset, dict(m.get("image", {})), **kw),
                            TextTransformer(**{**preset["text"], **kw, **_text_overrides(config)}),
                            num_classes=m.num_classes, rank=m.rank, width=m.width)
  raise ValueError(f"unknown task {config.task!r}; expected one of {TASKS}")


def example_batch(config, batch_size: int = 1) -> dict:
  """Zeros shaped like one training batch (for init and shape checks)."""
  if config.task == "dcca":
    s = config.dataset.get("image_size", 28)
    return {"view1": np.zeros((batch_size, s, s, 1), np.float32),
            "view2": np.zeros((batch_size, s, s, 1), np.float32),
            "label": np.zeros((batch_size,), np.int32)}
  s = config.dataset.image_size
  return {"image": np.zeros((batch_size, s, s, 3), np.float32),
          "tokens": np.zeros((batch_size, config.context_length), np.int32),
          "label": np.zeros((batch_size,), np.int32)}


def init_fn(model: nn.Module, config):
  """rng -> model.init(rng, example batch): the variables of `model` for config's input shapes."""
  batch = example_batch(config)
  if config.task == "dcca":
    return lambda rng: model.init(rng, batch["view1"], batch["view2"])
  return lambda rng: model.init(rng, batch["image"], batch["tokens"])


def _global_contrastive(loss, mesh):
  """loss(img, txt, scale, bias, axis_name=...) on batch shards, negatives from the global batch."""
  spec = P(parallel.BATCH_AXES)
  fn = functools.partial(loss, axis_name=parallel.BATCH_AXES)
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec, P(), P()), out_specs=P(),
                       axis_names=set(parallel.BATCH_AXES))


def make_loss_fn(model: nn.Module, config, mesh):
  """(params, batch) -> (loss, metrics) for config.task."""
  if config.task in ("clip", "siglip"):
    if config.task == "clip":
      chunk = config.get("loss_block_size", 0)
      base = (functools.partial(losses.chunked_clip_loss, block_size=chunk) if chunk
              else losses.clip_loss)
      contrastive = _global_contrastive(lambda x, y, s, b, axis_name: base(x, y, s,
                                                                           axis_name=axis_name),
                                        mesh)
    else:
      contrastive = _global_contrastive(losses.siglip_loss, mesh)

    def loss_fn(params, batch):
      out = model.apply({"params": params}, batch["image"], batch["tokens"])
      bias = jnp.zeros(()) if out.bias is None else out.bias
      loss = contrastive(out.image, out.text, out.scale, bias)
      return loss, {"scale": out.scale}
    return loss_fn

  if config.task == "dcca":
    def loss_fn(params, batch):
      zx, zy = model.apply({"params": params}, batch["view1"], batch["view2"])
      k = config.get("cca_k", 0) or None
      loss = losses.cca_loss(zx, zy, objective="topk" if k else "trace", k=k,
                             ridge=config.get("cca_ridge", 1e-3))
      return loss, {"correlation": -loss}
    return loss_fn

  if config.task == "fusion":
    def loss_fn(params, batch):
      logits = model.apply({"params": params}, batch["image"], batch["tokens"])
      labels = batch["label"]
      loss = jnp.mean(jax.nn.logsumexp(logits, -1)
                      - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0])
      return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return loss_fn
  raise ValueError(f"unknown task {config.task!r}; expected one of {TASKS}")


