"""End-of-training evaluation for each task (eval.py runs the full suite, mmjax.evaluate.suite):

  clip / siglip   zero-shot top-1 / top-5 accuracy on each eval split (class names x prompt
                  templates) and image <-> text recall@1
  dcca            sum and top canonical correlations of held-out view embeddings
  fusion          classification accuracy on each eval split
"""
from __future__ import annotations

import jax
from jax.sharding import NamedSharding

from mmjax import parallel
from mmjax.evaluate import suite


def mesh_of(params):
  """The mesh the params live on; one over this process's devices when they are host arrays
  (multi-process runs hand over numpy params: every process then evaluates on its own)."""
  leaf = jax.tree.leaves(params)[0]
  if isinstance(leaf, jax.Array) and isinstance(leaf.sharding, NamedSharding):
    return leaf.sharding.mesh
  return parallel.make_mesh(-1, 1, 1, devices=jax.local_devices())


def evaluate(config, model, params, builder, tokenizer) -> dict[str, float]:
  """The end-of-training metrics of config.task on config.dataset.eval_splits, {name: value}."""
  ctx = suite.Context(model, params, mesh_of(params), tokenizer,
                      image_size=config.dataset.get("image_size", 64),
                      batch_size=config.get("eval_batch_size", 500))
  if config.task in ("clip", "siglip"):
    results = suite.two_tower_suite(ctx, config, builder, full=False)
  elif config.task == "dcca":
    results = suite.two_view_suite(ctx, config, builder, full=False)
  else:
    results = suite.fusion_suite(ctx, config, builder, full=False)
  return results["metrics"]
