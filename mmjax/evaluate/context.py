"""What evaluators work with: the model and its params on the mesh, the task's outputs, and the
dataset's splits read through the grain loader and embedded batch by batch.

    ctx = Context(task, model, mesh, dataset, builder, config, tokenizer=tokenizer)
    ctx.set_params(state.params)                        # each evaluation round
    out = ctx.embed("test", ("image", "text"))          # {'image': (N, E), 'text', 'label': (N,)}
    ctx.encode_text(tokens)                             # (N, E): prompts for zero-shot

Embeddings are cached for the round (zero-shot and retrieval on one split embed its images once);
set_params starts a new round. The jitted functions and, with config.dataset.cache, the decoded
eval splits are kept across rounds, so evaluating during training costs only the forward passes.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from mmjax.data import decode, pipeline
from mmjax.errors import UserError
from mmjax.evaluate import embed


@dataclasses.dataclass(eq=False)
class Context:
  """The model, its data and how to batch, for one run's evaluations.

  Attributes:
    task: the mmjax.tasks.Task of the model (its outputs and transforms).
    model, params: the Flax module and its params, placed on `mesh`.
    dataset: the mmjax.data.datasets.Dataset; builder: its prepared TFDS builder.
    config: the run's config (splits, image size, batch sizes).
    tokenizer: the text tokenizer (None for tasks without text).
    full: eval.py's report: per-class accuracy, confusion matrices and plots (into out_dir).
    sources: split -> random-access source already open (e.g. train.py's cached train split).
    should_stop: asked between batches; when it returns True, embedding raises
      mmjax.evaluate.embed.Interrupted (train.py: a SIGTERM during an evaluation).
  """
  task: Any
  model: Any
  mesh: Mesh
  dataset: Any
  builder: Any
  config: Any
  tokenizer: Any = None
  params: Any = None
  full: bool = False
  out_dir: pathlib.Path | None = None
  quiet: bool = False
  sources: dict = dataclasses.field(default_factory=dict, repr=False)
  should_stop: Any = None
  _fns: dict = dataclasses.field(default_factory=dict, repr=False)
  _round: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def variables(self) -> dict:
    """{'params': params}, what model.apply takes."""
    return {"params": self.params}

  @property
  def batch_size(self) -> int:
    """Rows per evaluation batch (config.eval_batch_size, default 500)."""
    return self.config.get("eval_batch_size", 500)

  @property
  def image_size(self) -> int:
    """The side of the images the model takes (config.dataset.image_size)."""
    return self.config.dataset.get("image_size", 64)

  def set_params(self, params) -> None:
    """Evaluate these params from now on (a new round: the embedding cache is emptied)."""
    self.params = params
    self._round.clear()

  def splits(self, splits=None) -> tuple[str, ...]:
    """The given splits, or config.dataset.eval_splits."""
    return tuple(self.config.dataset.get("eval_splits", ()) if splits is None else splits)

  def source(self, split: str):
    """The random-access source of a split; an eval split is held in memory across rounds when
    config.dataset.cache is set."""
    if split not in self.sources:
      source = self.dataset.source(self.builder, split)
      if self.config.dataset.get("cache", False) and split in self.splits():
        source = pipeline.InMemorySource(source, desc=f"caching {split}")
      self.sources[split] = source
    return self.sources[split]

  def outputs_fn(self, names: tuple[str, ...]):
    """jit(variables, batch -> {name: task output}) for the given output names; ValueError naming
    the task's outputs when one is missing."""
    if names not in self._fns:
      available = self.task.outputs(self.model)
      missing = [n for n in names if n not in available]
      if missing:
        raise UserError(f"task {self.task.name!r} has no output {missing}; its outputs are "
                         f"{sorted(available)}")
      self._fns[names] = jax.jit(lambda v, b: {n: available[n](v, b) for n in names})
    return self._fns[names]

  def embed(self, split: str, names, *, limit: int | None = None, transform=None,
            key: str = "") -> dict[str, np.ndarray]:
    """{name: (n, ...)} of the task outputs `names` over the split's first `limit` examples (all
    by default), plus the transform's per-example scalars ('label', ...). transform: another
    transform than the task's eval transform, under a cache `key` of its own."""
    names = tuple(names)
    slot = self._round.setdefault((split, limit, key), {})
    missing = tuple(n for n in names if n not in slot)
    if missing:
      transform = transform or self.eval_transform()
      slot.update(embed.embed_source(
          self.outputs_fn(missing), self.variables, self.source(split), transform, self.mesh,
          self.batch_size, limit=limit, worker_count=self.config.get("worker_count", 0),
          desc=split, quiet=self.quiet, should_stop=self.should_stop))
    return slot

  def eval_transform(self):
    """The task's transform of one example for evaluation (train=False)."""
    return self.task.transform(self.config, self.dataset, train=False, tokenizer=self.tokenizer)

  def encode_text(self, tokens: np.ndarray, desc: str = "prompts") -> np.ndarray:
    """(N, L) tokens -> (N, E) with the task's 'text' output, in padded batches on the mesh."""
    fn = self.outputs_fn(("text",))
    return embed.embed_rows(fn, self.variables, {"tokens": np.asarray(tokens)}, self.mesh,
                            self.batch_size, desc=desc, quiet=self.quiet)["text"]

  def records(self, split: str, indices, key: str) -> list:
    """source[i][key] for a few records (strings decoded; images kept as their encoded bytes by
    the dataset's decoders decoded to (H, W, 3) uint8), e.g. captions and images for plots."""
    source = self.source(split)
    values = [source[int(i)][key] for i in indices]
    if key == self.dataset.image_field:
      return [decode.as_rgb(np.asarray(decode.open_image(v).convert("RGB"))) for v in values]
    return [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
