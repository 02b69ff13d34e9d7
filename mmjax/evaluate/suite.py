"""Evaluation suites, one per kind of model, over a dataset's eval splits.

  two_tower_suite   CLIP / SigLIP: zero-shot classification (where the dataset has class names),
                    image <-> text retrieval; full=True adds a linear probe (all and few-shot),
                    cross-modal transfer, embedding arithmetic (shapes) and plots
  two_view_suite    deep CCA: canonical correlations; full=True adds held-out correlations of CCA
                    fitted on train, a probe on view-1 projections and view 1 -> view 2 transfer
  fusion_suite      supervised fusion: accuracy; full=True adds per-class accuracy, confusion

Each returns {'metrics': {name: float}, 'per_class_accuracy': {split: {class: float}},
'confusion_matrix': {split: (C, C) list}, 'plots': [paths]}. Plots are written to out_dir.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mmjax.data import datasets
from mmjax.evaluate import (arithmetic, correlation, embed, probe, report, retrieval, transfer,
                            zero_shot)
from mmjax.losses import canonical_correlations


@dataclasses.dataclass
class Context:
  """What every suite needs: the model, its params on the mesh, and how to batch."""
  model: Any
  params: Any
  mesh: Mesh
  tokenizer: Any = None
  image_size: int = 64
  batch_size: int = 500
  probe_examples: int = 5000      # train examples embedded for probes and transfer (0: none)
  shots: tuple[int, ...] = (1, 5, 10)
  l2: float = 1e-3
  chunk_size: int = 1024          # retrieval query rows per step
  quiet: bool = False
  out_dir: pathlib.Path | None = None

  @property
  def variables(self):
    """{'params': params}, what model.apply takes."""
    return {"params": self.params}


def _empty() -> dict:
  return {"metrics": {}, "per_class_accuracy": {}, "confusion_matrix": {}, "plots": []}


def _embed(ctx: Context, fn, source, transform, *, keep=(), limit=None, desc=""):
  total = len(source) if limit is None else min(limit, len(source))
  batches = embed.split_batches(embed.source_examples(source), transform, ctx.batch_size,
                                keep=keep, limit=limit)
  return embed.run(fn, ctx.variables, batches, ctx.mesh, ctx.batch_size, desc=desc, total=total,
                   quiet=ctx.quiet)


def _record_classes(results: dict, split: str, summary: dict, names, prefix: str) -> None:
  results["per_class_accuracy"][split] = {
      n: float(a) for n, a in zip(names, summary["per_class"]) if a == a}
  results["confusion_matrix"][split] = summary["confusion"].tolist()
  results["metrics"][f"{split}/{prefix}mean_per_class"] = summary["mean_per_class"]


def _plot_confusions(ctx: Context, results: dict, names, what: str = "zero-shot") -> None:
  if ctx.out_dir is None:
    return
  for split, matrix in results["confusion_matrix"].items():
    results["plots"].append(report.confusion_plot(
        matrix, names, ctx.out_dir / f"confusion_{split}.png",
        f"{what} confusion on {split} (fraction of each true class)"))


# --- two towers ----------------------------------------------------------------------------------

def two_tower_fns(model) -> dict:
  """Jitted (variables, inputs) -> embeddings: 'pair' (images + tokens), 'image', 'text'."""
  image = lambda v, b: model.apply(v, b["image"], method="encode_image")  # noqa: E731
  text = lambda v, b: model.apply(v, b["tokens"], method="encode_text")   # noqa: E731
  return {"pair": jax.jit(lambda v, b: {"image": image(v, b), "text": text(v, b)}),
          "image": jax.jit(lambda v, b: {"image": image(v, b)}),
          "text": jax.jit(lambda v, b: {"text": text(v, b)})}


def class_weights(ctx: Context, fns: dict, names, templates) -> np.ndarray:
  """(C, E) zero-shot classifier of names x templates (batched through the mesh)."""
  encode = embed.text_encoder(fns["text"], ctx.variables, ctx.mesh, ctx.batch_size,
                              quiet=ctx.quiet)
  return np.asarray(zero_shot.classifier_weights(encode, ctx.tokenizer, names, templates))


def zero_shot_into(results: dict, split: str, image_emb, labels, weights, names, *,
                   full: bool) -> None:
  """Adds {split}/zero_shot_top1, _top5, _top1_within_split (+ per class, confusion if full)."""
  summary = zero_shot.classify(np.asarray(image_emb) @ weights.T, labels)
  for key in ("top1", "top5", "top1_within_split"):
    if key in summary:
      results["metrics"][f"{split}/zero_shot_{key}"] = summary[key]
  if full:
    _record_classes(results, split, summary, names, "zero_shot_")


def two_tower_suite(ctx: Context, config, builder, *, full: bool = True,
                    fns: dict | None = None) -> dict:
  """Zero-shot and retrieval on config.dataset.eval_splits (+ probes, transfer, arithmetic, plots
  when full). Digits (no captions) get zero-shot on view-1 images only."""
  fns = fns or two_tower_fns(ctx.model)
  name = config.dataset.name
  results = _empty()
  names = datasets.class_names(name) if name in ("shapes", "digits") else None
  weights = class_weights(ctx, fns, names, datasets.templates(name)) if names else None
  embedded = {}
  for split in config.dataset.eval_splits:
    source = builder.as_data_source(split=split)
    if name == "digits":
      out, raw = _embed(ctx, fns["image"], source, embed.ImageTransform(ctx.image_size, "view1"),
                        keep=("label",), desc=split)
      zero_shot_into(results, split, out["image"], raw["label"], weights, names, full=full)
      continue
    transform = datasets.transform(name, train=False, image_size=ctx.image_size,
                                   tokenizer=ctx.tokenizer)
    keep = ("caption", "label", "colour", "shape") if name == "shapes" else ("caption",)
    out, raw = _embed(ctx, fns["pair"], source, transform, keep=keep, desc=split)
    embedded[split] = (out, raw, source)
    if names:
      zero_shot_into(results, split, out["image"], raw["label"], weights, names, full=full)
    ks = (1, 5, 10) if full else (1,)
    metrics = retrieval.retrieval_metrics(out["image"], out["text"], mesh=ctx.mesh,
                                          chunk_size=ctx.chunk_size, ks=ks)
    if not full:   # at the end of training: recall@1 only
      metrics = {k: v for k, v in metrics.items() if "recall" in k}
    results["metrics"].update({f"{split}/{k}": v for k, v in metrics.items()})
  if full and name == "shapes":
    _shapes_extras(ctx, fns, config, builder, embedded, results)
  if full and ctx.out_dir is not None and embedded:
    split = next(iter(embedded))
    results["plots"] += _pair_plots(ctx, *embedded[split], split)
  if full:
    _plot_confusions(ctx, results, names)
  return results


def _shapes_extras(ctx, fns, config, builder, embedded, results) -> None:
  """Probe and transfer (train -> test), arithmetic over test and test_unseen images."""
  from mmjax.data import shapes  # pylint: disable=import-outside-toplevel
  m = results["metrics"]
  if ctx.probe_examples:
    transform = datasets.transform("shapes", train=False, image_size=ctx.image_size,
                                   tokenizer=ctx.tokenizer)
    train, raw = _embed(ctx, fns["pair"], builder.as_data_source(
        split=config.dataset.train_split), transform, keep=("label",), limit=ctx.probe_examples,
                        desc="train")
    test, test_raw, _ = next(iter(embedded.values()))
    c = len(shapes.CLASS_NAMES)
    p = probe.linear_probe(train["image"], raw["label"], test["image"], test_raw["label"], c,
                           shots=ctx.shots, l2=ctx.l2)
    m.update({f"probe/{k}": v for k, v in p.items()})
    t = transfer.transfer_metrics(train, test, raw["label"], test_raw["label"], c,
                                  names=("image", "text"), l2=ctx.l2)
    m.update({f"transfer/{k}": v for k, v in t.items()})
  images = np.concatenate([out["image"] for out, _, _ in embedded.values()])
  attrs = np.concatenate([np.stack([r["colour"], r["shape"]], 1) for _, r, _ in embedded.values()])
  encode = embed.text_encoder(fns["text"], ctx.variables, ctx.mesh, ctx.batch_size, desc="words",
                              quiet=ctx.quiet)
  words = [encode(ctx.tokenizer(list(shapes.COLOURS))), encode(ctx.tokenizer(list(shapes.SHAPES)))]
  a = arithmetic.arithmetic_metrics(images, attrs, words, ("colour", "shape"))
  m.update({f"arithmetic/{k}": v for k, v in a.items()})


def _pair_plots(ctx, out, raw, source, split, n: int = 12, queries: int = 6, k: int = 5):
  """Similarity matrix of n spread-out pairs, and text -> image top-k for a few captions."""
  picks = np.unique(np.linspace(0, len(out["image"]) - 1, min(n, len(out["image"]))).astype(int))
  captions = [raw["caption"][i] for i in picks]
  files = [report.similarity_plot(out["image"][picks], out["text"][picks], captions,
                                  ctx.out_dir / f"similarity_{split}.png")]
  asked = picks[:queries]
  top = retrieval.top_k(out["text"][asked], out["image"], min(k, len(out["image"])))
  images = np.stack([[np.asarray(source[int(j)]["image"]) for j in row] for row in top])
  labels = np.asarray(raw["label"]) if "label" in raw else None
  files.append(report.retrieval_plot(
      [raw["caption"][i] for i in asked], images, top == asked[:, None],
      ctx.out_dir / f"retrieval_{split}.png",
      f"{split}: text -> image (green: the caption's own image, orange: its class)",
      same_class=None if labels is None else labels[top] == labels[asked][:, None]))
  return files


def tfds_zero_shot(ctx: Context, fns: dict, examples, total: int, names, *, split: str,
                   image_key: str = "image", label_key: str = "label", templates=None,
                   full: bool = True) -> dict:
  """Zero-shot accuracy on any image classification examples (dicts with image_key, label_key)."""
  results = _empty()
  weights = class_weights(ctx, fns, names, templates or zero_shot.GENERIC_TEMPLATES)
  batches = embed.split_batches(examples, embed.ImageTransform(ctx.image_size, image_key,
                                                               label_key), ctx.batch_size,
                                keep=(label_key,))
  out, raw = embed.run(fns["image"], ctx.variables, batches, ctx.mesh, ctx.batch_size,
                       desc=split, total=total, quiet=ctx.quiet)
  zero_shot_into(results, split, out["image"], raw[label_key], weights, names, full=full)
  if full:
    _plot_confusions(ctx, results, names)
  return results


# --- two views (deep CCA) ------------------------------------------------------------------------

def two_view_suite(ctx: Context, config, builder, *, full: bool = True) -> dict:
  """{split}/total_correlation and top_correlation (CCA fitted on the split itself, as at the end
  of training); full: held-out correlations of CCA fitted on train, a linear probe on view-1
  canonical variates (train -> split) and view 1 -> view 2 transfer."""
  fn = jax.jit(lambda v, b: dict(zip(("view1", "view2"),
                                     ctx.model.apply(v, b["view1"], b["view2"]))))
  transform = datasets.transform(config.dataset.name, train=False)
  ridge = config.get("cca_ridge", 1e-3)
  results = _empty()
  m = results["metrics"]
  train = None
  if full:
    train, train_raw = _embed(ctx, fn, builder.as_data_source(split=config.dataset.train_split),
                              transform, keep=("label",), limit=ctx.probe_examples, desc="train")
    cca = correlation.fit_cca(train["view1"], train["view2"], ridge=ridge)
  for split in config.dataset.eval_splits:
    out, raw = _embed(ctx, fn, builder.as_data_source(split=split), transform, keep=("label",),
                      desc=split)
    rho = np.asarray(canonical_correlations(jnp.asarray(out["view1"]), jnp.asarray(out["view2"]),
                                            ridge=ridge))
    m[f"{split}/total_correlation"] = float(rho.sum())
    m[f"{split}/top_correlation"] = float(rho[0])
    if not full:
      continue
    rho = correlation.held_out_correlations(cca, out["view1"], out["view2"])
    m[f"{split}/held_out_total_correlation"] = float(rho.sum())
    m[f"{split}/held_out_top_correlation"] = float(rho.max())
    tr = dict(zip(("view1", "view2"), correlation.project(cca, train["view1"], train["view2"])))
    te = dict(zip(("view1", "view2"), correlation.project(cca, out["view1"], out["view2"])))
    params = probe.fit_logistic(tr["view1"], train_raw["label"], 10, l2=ctx.l2)
    m[f"{split}/probe_view1_top1"] = probe.probe_accuracy(params, te["view1"], raw["label"])
    t = transfer.transfer_metrics(tr, te, train_raw["label"], raw["label"], 10,
                                  names=("view1", "view2"), l2=ctx.l2)
    m.update({f"{split}/transfer_{k}": v for k, v in t.items()})
  return results


# --- fusion --------------------------------------------------------------------------------------

def fusion_suite(ctx: Context, config, builder, *, full: bool = True) -> dict:
  """{split}/accuracy of the fused classifier (+ per class and the confusion matrix when full)."""
  fn = jax.jit(lambda v, b: {"logits": ctx.model.apply(v, b["image"], b["tokens"])})
  transform = datasets.transform(config.dataset.name, train=False, image_size=ctx.image_size,
                                 tokenizer=ctx.tokenizer)
  results = _empty()
  names = datasets.class_names(config.dataset.name)
  for split in config.dataset.eval_splits:
    out, raw = _embed(ctx, fn, builder.as_data_source(split=split), transform, keep=("label",),
                      desc=split)
    summary = zero_shot.classify(out["logits"], raw["label"])
    results["metrics"][f"{split}/accuracy"] = float(
        np.mean(np.argmax(out["logits"], 1) == np.asarray(raw["label"])))
    if full:
      _record_classes(results, split, summary, names, "")
  if full:
    _plot_confusions(ctx, results, names, "fusion classifier")
  return results
