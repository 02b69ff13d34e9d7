"""The built-in evaluators: functions `fn(ctx, **settings) -> results` (mmjax.evaluate.evaluators).

  zero_shot    zero-shot classification from class names x prompt templates (two towers)
  retrieval    image <-> text recall@k and ranks (two towers on captioned data)
  probe        a linear probe on one output's embeddings, all training data and k-shot
  transfer     cross-modal transfer: a probe fitted on one output, tested on another
  arithmetic   embedding arithmetic over the dataset's attributes (image - "red" + "blue")
  correlation  canonical correlations of two outputs (deep CCA, DCCAE)
  accuracy     classification accuracy of 'logits' (supervised fusion)

Splits default to config.dataset.eval_splits, the training split to config.dataset.train_split.
With ctx.full (eval.py) they add per-class accuracy, confusion matrices and plots.
"""
from __future__ import annotations

import numpy as np

from mmjax.evaluate import (arithmetic as arithmetic_lib, correlation as correlation_lib, embed,
                            probe as probe_lib, report, retrieval as retrieval_lib,
                            transfer as transfer_lib, zero_shot as zero_shot_lib)
from mmjax.losses import canonical_correlations

EVALUATORS = ("zero_shot", "retrieval", "probe", "transfer", "arithmetic", "correlation",
              "accuracy")


def empty() -> dict:
  """Results with nothing in them yet."""
  return {"metrics": {}, "per_class_accuracy": {}, "confusion_matrix": {}, "plots": []}


def needs(outputs):
  """Marks an evaluator with the task outputs it embeds: a function of its settings, so a config
  asking for an output the task lacks is an error before training starts."""
  def mark(fn):
    fn.needs = outputs
    return fn
  return mark


def _classes(ctx) -> tuple[str, ...]:
  names = ctx.dataset.class_names
  if not names:
    raise ValueError(f"dataset {ctx.dataset.name!r} has no class names (Dataset.class_names): "
                     "zero-shot classification, probes and accuracy need them")
  return names


def _train_split(ctx, train_split):
  return train_split or ctx.config.dataset.train_split


def _record_classes(results: dict, split: str, summary: dict, names, prefix: str, full: bool):
  results["metrics"][f"{split}/{prefix}mean_per_class"] = summary["mean_per_class"]
  if full:
    results["per_class_accuracy"][split] = {
        n: float(a) for n, a in zip(names, summary["per_class"]) if a == a}
    results["confusion_matrix"][split] = summary["confusion"].tolist()


def plot_confusions(ctx, results: dict, names, what: str) -> None:
  """A PNG of each confusion matrix in results (with ctx.full and an out_dir), added to its plots."""
  if ctx.full and ctx.out_dir is not None:
    for split, matrix in results["confusion_matrix"].items():
      results["plots"].append(report.confusion_plot(
          matrix, names, ctx.out_dir / f"confusion_{split}.png",
          f"{what} confusion on {split} (fraction of each true class)"))


# --- two towers ----------------------------------------------------------------------------------

def class_weights(ctx, names, templates) -> np.ndarray:
  """(C, E) zero-shot classifier of names x templates, the prompts encoded on the mesh."""
  return np.asarray(zero_shot_lib.classifier_weights(ctx.encode_text, ctx.tokenizer, names,
                                                     templates))


def zero_shot_into(results: dict, split: str, image_emb, labels, weights, names, *,
                   full: bool) -> None:
  """Adds {split}/zero_shot_top1, _top5, _top1_within_split, _mean_per_class (+ per class and the
  confusion matrix when full)."""
  summary = zero_shot_lib.classify(np.asarray(image_emb) @ weights.T, labels)
  for key in ("top1", "top5", "top1_within_split"):
    if key in summary:
      results["metrics"][f"{split}/zero_shot_{key}"] = summary[key]
  _record_classes(results, split, summary, names, "zero_shot_", full)


def _images(ctx, split: str) -> dict:
  """The 'image' output and 'label' of a split; a dataset whose image lives in another field
  (digits' view1) is read through ImageTransform."""
  field = ctx.dataset.image_field
  if field == "image":
    return ctx.embed(split, ("image",))
  return ctx.embed(split, ("image",), key=field,
                   transform=embed.ImageTransform(ctx.image_size, field))


@needs(lambda settings: ("image", "text"))
def zero_shot(ctx, *, splits=None, templates=None) -> dict:
  """Zero-shot classification (Radford et al. 2021, Sec. 3.1.4) of each split's images among the
  dataset's class names, each written into every template (default: the dataset's, else CLIP's
  generic ones): {split}/zero_shot_top1, _top5, _top1_within_split, _mean_per_class."""
  names = _classes(ctx)
  templates = tuple(templates or ctx.dataset.templates or zero_shot_lib.GENERIC_TEMPLATES)
  results = empty()
  splits = ctx.splits(splits)
  if not splits:
    return results
  weights = class_weights(ctx, names, templates)
  for split in splits:
    out = _images(ctx, split)
    zero_shot_into(results, split, out["image"], out["label"], weights, names, full=ctx.full)
  plot_confusions(ctx, results, names, "zero-shot")
  return results


@needs(lambda settings: ("image", "text"))
def retrieval(ctx, *, splits=None, ks=(1, 5, 10), chunk_size: int = 1024) -> dict:
  """Image <-> text retrieval over each split's pairs: {split}/i2t_recall@k, t2i_recall@k,
  median and mean ranks (+ similarity and retrieval plots of the first split when full)."""
  results = empty()
  for i, split in enumerate(ctx.splits(splits)):
    out = ctx.embed(split, ("image", "text"))
    metrics = retrieval_lib.retrieval_metrics(out["image"], out["text"], mesh=ctx.mesh,
                                              chunk_size=chunk_size, ks=tuple(ks))
    results["metrics"].update({f"{split}/{k}": v for k, v in metrics.items()})
    if i == 0 and ctx.full and ctx.out_dir is not None:
      results["plots"] += _pair_plots(ctx, out, split)
  return results


def _pair_plots(ctx, out, split, n: int = 12, queries: int = 6, k: int = 5):
  """Similarity matrix of n spread-out pairs, and text -> image top-k for a few captions."""
  picks = np.unique(np.linspace(0, len(out["image"]) - 1, min(n, len(out["image"]))).astype(int))
  captions = ctx.records(split, picks, "caption")
  files = [report.similarity_plot(out["image"][picks], out["text"][picks], captions,
                                  ctx.out_dir / f"similarity_{split}.png")]
  asked = picks[:queries]
  top = retrieval_lib.top_k(out["text"][asked], out["image"], min(k, len(out["image"])))
  images = np.stack([np.stack(ctx.records(split, row, "image")) for row in top])
  labels = out.get("label")
  files.append(report.retrieval_plot(
      captions[:len(asked)], images, top == asked[:, None],
      ctx.out_dir / f"retrieval_{split}.png",
      f"{split}: text -> image (green: the caption's own image, orange: its class)",
      same_class=None if labels is None else labels[top] == labels[asked][:, None]))
  return files


@needs(lambda settings: ("image", "text"))
def arithmetic(ctx, *, splits=None) -> dict:
  """Embedding arithmetic (Kiros et al. 2014) over the dataset's attributes (e.g. colour, shape):
  image - word(value) + word(other value) retrieves an image with the other value, on the eval
  splits' images together: arithmetic/hit and arithmetic/{attribute}_hit."""
  attributes = dict(ctx.dataset.attributes)
  if not attributes:
    raise ValueError(f"arithmetic: dataset {ctx.dataset.name!r} names no attributes "
                     "(Dataset.attributes: integer field -> the words of its values)")
  results = empty()
  outs = [ctx.embed(split, ("image",)) for split in ctx.splits(splits)]
  if not outs:
    return results
  images = np.concatenate([o["image"] for o in outs])
  values = np.stack([np.concatenate([o[a] for o in outs]) for a in attributes], 1)
  words = [ctx.encode_text(ctx.tokenizer(list(w)), desc="words") for w in attributes.values()]
  metrics = arithmetic_lib.arithmetic_metrics(images, values, words, tuple(attributes))
  results["metrics"].update({f"arithmetic/{k}": v for k, v in metrics.items()})
  return results


# --- probes --------------------------------------------------------------------------------------

@needs(lambda settings: (settings.get("output", "image"),))
def probe(ctx, *, output: str = "image", split=None, train_split=None, examples: int = 5000,
          shots=(1, 5, 10), l2: float = 1e-3) -> dict:
  """A linear probe (L-BFGS logistic regression) on `output`, fitted on the first `examples`
  training examples (and k-shot subsets), tested on `split` (default: the first eval split):
  probe/top1, probe/{k}_shot_top1."""
  results = empty()
  split = split or next(iter(ctx.splits()), None)
  if not split or not examples:
    return results
  c = len(_classes(ctx))
  train = ctx.embed(_train_split(ctx, train_split), (output,), limit=examples)
  test = ctx.embed(split, (output,))
  p = probe_lib.linear_probe(train[output], train["label"], test[output], test["label"], c,
                             shots=tuple(shots), l2=l2)
  results["metrics"].update({f"probe/{k}": v for k, v in p.items()})
  return results


@needs(lambda settings: tuple(settings.get("outputs", ("image", "text"))))
def transfer(ctx, *, outputs=("image", "text"), split=None, train_split=None,
             examples: int = 5000, l2: float = 1e-3) -> dict:
  """Cross-modal transfer (Ngiam et al. 2011): a probe fitted on one output of the training
  examples, tested on the other output of `split`, both ways, and the same-output baselines:
  transfer/{a}_to_{b}."""
  results = empty()
  split = split or next(iter(ctx.splits()), None)
  if not split or not examples:
    return results
  outputs = tuple(outputs)
  train = ctx.embed(_train_split(ctx, train_split), outputs, limit=examples)
  test = ctx.embed(split, outputs)
  t = transfer_lib.transfer_metrics(train, test, train["label"], test["label"], len(_classes(ctx)),
                                    names=outputs, l2=l2)
  results["metrics"].update({f"transfer/{k}": v for k, v in t.items()})
  return results


# --- two views and classifiers -------------------------------------------------------------------

@needs(lambda settings: tuple(settings.get("outputs", ("view1", "view2"))))
def correlation(ctx, *, outputs=("view1", "view2"), splits=None, ridge=None,
                held_out: bool = True, train_split=None, examples: int = 5000,
                l2: float = 1e-3) -> dict:
  """Canonical correlations of two outputs on each split, CCA fitted on the split itself:
  {split}/total_correlation, top_correlation; held_out adds CCA fitted on the training examples:
  held_out_total_correlation, held_out_top_correlation, a probe on the first output's canonical
  variates (probe_view1_top1) and transfer between the two (transfer_*)."""
  ridge = ctx.config.get("cca_ridge", 1e-3) if ridge is None else ridge
  a, b = outputs
  results = empty()
  m = results["metrics"]
  splits = ctx.splits(splits)
  held_out = held_out and bool(examples)
  if held_out and splits:
    train = ctx.embed(_train_split(ctx, train_split), outputs, limit=examples)
    cca = correlation_lib.fit_cca(train[a], train[b], ridge=ridge)
    tr = dict(zip(("view1", "view2"), correlation_lib.project(cca, train[a], train[b])))
  for split in splits:
    out = ctx.embed(split, outputs)
    rho = np.asarray(canonical_correlations(out[a], out[b], ridge=ridge))
    m[f"{split}/total_correlation"] = float(rho.sum())
    m[f"{split}/top_correlation"] = float(rho[0])
    if not held_out:
      continue
    rho = correlation_lib.held_out_correlations(cca, out[a], out[b])
    m[f"{split}/held_out_total_correlation"] = float(rho.sum())
    m[f"{split}/held_out_top_correlation"] = float(rho.max())
    te = dict(zip(("view1", "view2"), correlation_lib.project(cca, out[a], out[b])))
    c = len(_classes(ctx))
    params = probe_lib.fit_logistic(tr["view1"], train["label"], c, l2=l2)
    m[f"{split}/probe_view1_top1"] = probe_lib.probe_accuracy(params, te["view1"], out["label"])
    t = transfer_lib.transfer_metrics(tr, te, train["label"], out["label"], c,
                                      names=("view1", "view2"), l2=l2)
    m.update({f"{split}/transfer_{k}": v for k, v in t.items()})
  return results


@needs(lambda settings: ("logits",))
def accuracy(ctx, *, splits=None) -> dict:
  """Top-1 accuracy of the 'logits' output on each split: {split}/accuracy, mean_per_class."""
  names = _classes(ctx)
  results = empty()
  for split in ctx.splits(splits):
    out = ctx.embed(split, ("logits",))
    summary = zero_shot_lib.classify(out["logits"], out["label"])
    results["metrics"][f"{split}/accuracy"] = float(
        np.mean(np.argmax(out["logits"], 1) == out["label"]))
    _record_classes(results, split, summary, names, "", ctx.full)
  plot_confusions(ctx, results, names, "classifier")
  return results
