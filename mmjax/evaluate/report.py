"""Plots (PNG, matplotlib's Agg backend: no display needed) and a Markdown report of an evaluation.

    similarity_plot(image_emb, text_emb, captions, path)     # a batch's image x caption cosines
    confusion_plot(confusion, class_names, path)             # zero-shot confusion matrix
    retrieval_plot(captions, images, hits, path)             # text -> image: top-k per caption
    curves_plot(workdir / "metrics.jsonl", path)             # training curves
    eval_curves_plot(workdir / "metrics.jsonl", path)        # evaluations during training
    write_report(workdir, results, files)                    # report.md beside metrics.json
"""
from __future__ import annotations

import json
import math
import pathlib
import textwrap
from collections.abc import Sequence

import numpy as np


def _pyplot():
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("the evaluation report's plots need matplotlib: pip install matplotlib"
                      ) from e
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _save(fig, path) -> pathlib.Path:
  path = pathlib.Path(path)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  _pyplot().close(fig)
  return path


def _short(text: str, width: int) -> str:
  return text if len(text) <= width else text[:width - 1] + "…"


def similarity_plot(image_emb, text_emb, captions: Sequence[str], path) -> pathlib.Path:
  """Heat map of image_emb (n, E) @ text_emb (n, E)^T; pair i is the diagonal; captions on y."""
  plt = _pyplot()
  sim = np.asarray(image_emb, np.float32) @ np.asarray(text_emb, np.float32).T
  n = len(sim)
  fig, ax = plt.subplots(figsize=(4 + 0.35 * n, 2 + 0.35 * n))
  im = ax.imshow(sim.T, cmap="viridis")
  ax.set_xticks(range(n), [str(i) for i in range(n)])
  ax.set_yticks(range(n), [f"{_short(c, 40)} ({i})" for i, c in enumerate(captions)], fontsize=7)
  ax.set_xlabel("image")
  ax.set_title("cosine similarity: images x their captions (pairs on the diagonal)")
  fig.colorbar(im, ax=ax, fraction=0.03)
  return _save(fig, path)


def confusion_plot(confusion, class_names: Sequence[str], path, title: str = "") -> pathlib.Path:
  """(C, C) counts, rows normalised to fractions of each true class; absent classes stay blank."""
  plt = _pyplot()
  confusion = np.asarray(confusion, np.float64)
  totals = confusion.sum(1, keepdims=True)
  frac = np.divide(confusion, totals, out=np.full_like(confusion, np.nan), where=totals > 0)
  c = len(class_names)
  side = min(4 + 0.22 * c, 16)
  fig, ax = plt.subplots(figsize=(side + 1, side))
  im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
  if c <= 100:   # beyond that, names would overlap: leave the axes unlabelled
    small = max(4, 9 - c // 12)
    ax.set_xticks(range(c), class_names, rotation=90, fontsize=small)
    ax.set_yticks(range(c), class_names, fontsize=small)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title or "zero-shot confusion matrix (fraction of each true class)")
  fig.colorbar(im, ax=ax, fraction=0.03)
  return _save(fig, path)


def retrieval_plot(captions: Sequence[str], images, hits, path, title: str = "",
                   same_class=None) -> pathlib.Path:
  """One row per query caption: its top-k retrieved images (q, k, H, W, 3) uint8, framed green
  where hits (q, k) is true (the caption's own image), orange where same_class (q, k) is (another
  image of the caption's class), red otherwise."""
  plt = _pyplot()
  images, hits = np.asarray(images), np.asarray(hits)
  same_class = np.zeros_like(hits) if same_class is None else np.asarray(same_class)
  q, k = hits.shape
  fig, axes = plt.subplots(q, k + 1, figsize=(1.6 * (k + 1) + 2.2, 1.6 * q), squeeze=False)
  for r in range(q):
    axes[r, 0].axis("off")
    axes[r, 0].text(1.0, 0.5, textwrap.fill(captions[r], 26), ha="right", va="center",
                    fontsize=8, transform=axes[r, 0].transAxes)
    for j in range(k):
      ax = axes[r, j + 1]
      ax.imshow(images[r, j])
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_color("tab:green" if hits[r, j] else
                        "tab:orange" if same_class[r, j] else "tab:red")
        spine.set_linewidth(3)
      if r == 0:
        ax.set_title(f"#{j + 1}", fontsize=8)
  fig.suptitle(title or "text -> image retrieval (green: the caption's own image, orange: its "
               "class)", fontsize=10)
  return _save(fig, path)


def read_jsonl(path) -> list[dict]:
  """The objects of a JSON-lines file (e.g. train.py's metrics.jsonl); [] if it does not exist."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves_plot(metrics_jsonl, path) -> pathlib.Path | None:
  """One panel per logged training scalar against step; None when there is no training log.
  A row of metrics.jsonl holds a step's training scalars ('loss', ...) and, when it was evaluated,
  its evaluation metrics ('split/name', plotted by eval_curves_plot)."""
  rows = [r for r in read_jsonl(metrics_jsonl) if "loss" in r]
  if not rows:
    return None
  plt = _pyplot()
  keys = [k for k in rows[0] if k != "step" and "/" not in k
          and isinstance(rows[0][k], (int, float))]
  cols = min(3, len(keys))
  nrows = math.ceil(len(keys) / cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
  for ax, key in zip(axes.flat, keys):
    pts = [(r["step"], r[key]) for r in rows if key in r]
    ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(keys):]:
    ax.axis("off")
  fig.tight_layout()
  return _save(fig, path)


def eval_curves_plot(metrics_jsonl, path) -> pathlib.Path | None:
  """One panel per evaluation metric ('zero_shot_top1', ...) against step, a line per split
  ('test', 'test_unseen'), from the evaluations train.py logged during training; None when
  fewer than two steps were evaluated."""
  series: dict[str, dict[str, list]] = {}
  for r in read_jsonl(metrics_jsonl):
    for key, value in r.items():
      if "/" in key and isinstance(value, (int, float)):
        split, _, name = key.rpartition("/")
        series.setdefault(name, {}).setdefault(split, []).append((r["step"], value))
  series = {n: lines for n, lines in series.items() if max(len(p) for p in lines.values()) > 1}
  if not series:
    return None
  plt = _pyplot()
  cols = min(3, len(series))
  nrows = math.ceil(len(series) / cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
  for ax, (name, lines) in zip(axes.flat, series.items()):
    for split, pts in lines.items():
      ax.plot(*zip(*pts), marker=".", label=split)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.grid(alpha=0.3)
    if len(lines) > 1:
      ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(series):]:
    ax.axis("off")
  fig.tight_layout()
  return _save(fig, path)


def write_report(workdir, results: dict, files: Sequence[pathlib.Path]) -> pathlib.Path:
  """workdir/report.md: where the model came from, the metrics table and every plot."""
  workdir = pathlib.Path(workdir)
  lines = ["# Evaluation report", ""]
  for key, value in results.get("source", {}).items():
    lines.append(f"- {key}: `{value}`")
  lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
  lines += [f"| {k} | {v:.4f} |" for k, v in sorted(results["metrics"].items())]
  for split, accs in results.get("per_class_accuracy", {}).items():
    worst = sorted((v, k) for k, v in accs.items() if v == v)[:5]
    lines += ["", f"Hardest classes on {split}: " + ", ".join(f"{k} ({v:.2f})" for v, k in worst)]
  lines += ["", "## Plots", ""]
  for f in files:
    name = pathlib.Path(f).name
    lines += [f"### {name}", "", f"![{name}]({name})", ""]
  path = workdir / "report.md"
  path.write_text("\n".join(lines) + "\n")
  return path
