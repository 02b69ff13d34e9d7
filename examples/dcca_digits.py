"""Deep CCA (Andrew et al. 2013) on the two-view digits, written as a plain JAX training loop.

    python examples/dcca_digits.py           # 300 full-batch steps, about a minute on a CPU
    python examples/dcca_digits.py --tiny    # 5 steps with a small network (what CI runs)

View 1 is a rotated digit, view 2 another noisy image of the same class (mmjax.data.digits; Wang et
al. 2015), so the only thing the views share is the class. Two MLPs f and g
(mmjax.models.MlpEncoder) are trained with mmjax.losses.cca_loss, the negative sum of the
canonical correlations of f(view1) and g(view2) over the batch. Afterwards the script reports,
on the held-out test split:

  * the canonical correlations of the test embeddings under a linear CCA fitted on train
    (mmjax.evaluate.correlation_metrics: at most 10, one per output dimension);
  * the accuracy of a linear probe on f(view1), which tells whether the class was recovered
    without ever being used as a label.

The same model trains with `python train.py --config configs/digits_dcca.py` (the trainer adds the
device mesh, checkpoints and metrics); this file shows the loss in a loop of your own.
The dataset is made from scikit-learn's bundled 8x8 digits (no download).
"""
from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import numpy as np
import optax

from mmjax import losses
from mmjax.data import pipeline
from mmjax.data.digits import DigitsTwoView
from mmjax.evaluate import correlation_metrics, linear_probe
from mmjax.models import MlpEncoder


def load_split(builder, split: str):
  """(view1 (n, 784), view2 (n, 784), labels (n,)) of a split, flattened, as numpy arrays."""
  source = builder.as_data_source(split=split)
  rows = [source[i] for i in range(len(source))]
  flat = lambda key: np.stack([r[key].reshape(-1) for r in rows]).astype(np.float32)  # noqa: E731
  return flat("view1"), flat("view2"), np.asarray([r["label"] for r in rows])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default="~/.cache/mmjax/datasets",
                      help="where the dataset is prepared (once) and read")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
  parser.add_argument("--tiny", action="store_true", help="5 steps, hidden (32,) (for CI)")
  args = parser.parse_args(argv)
  if args.tiny:
    args.steps, args.hidden = 5, [32]

  builder = pipeline.prepare(DigitsTwoView, args.data_dir)   # ~5 s the first time, then cached
  x_train, y_train, labels_train = load_split(builder, "train")
  x_test, y_test, labels_test = load_split(builder, "test")
  print(f"train {x_train.shape} + {y_train.shape}, test {x_test.shape} + {y_test.shape}")

  out_dim = 10
  f, g = MlpEncoder(tuple(args.hidden), out_dim), MlpEncoder(tuple(args.hidden), out_dim)
  kf, kg = jax.random.split(jax.random.key(0))
  params = nn.unbox({"f": jax.jit(f.init)(kf, x_train[:1])["params"],
                     "g": jax.jit(g.init)(kg, y_train[:1])["params"]})

  def loss_fn(params, x, y):
    zx = f.apply({"params": params["f"]}, x)                       # (n, 10)
    zy = g.apply({"params": params["g"]}, y)                       # (n, 10)
    return losses.cca_loss(zx, zy, objective="trace", ridge=1e-3)  # -(rho_1 + ... + rho_10)

  tx = optax.adamw(1e-3, weight_decay=1e-4)
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  # Full-batch training: CCA estimates covariances over the batch, so bigger batches are better,
  # and the 1,197 training pairs fit easily.
  start = time.perf_counter()
  for step in range(1, args.steps + 1):
    params, opt_state, loss = train_step(params, opt_state, x_train, y_train)
    if step == 1 or step % max(args.steps // 5, 1) == 0 or step == args.steps:
      print(f"step {step:4d}  sum of train correlations {-float(loss):.3f} (max {out_dim})")

  embed = jax.jit(lambda p, x, y: (f.apply({"params": p["f"]}, x), g.apply({"params": p["g"]}, y)))
  zx_train, zy_train = map(np.asarray, embed(params, x_train, y_train))
  zx_test, zy_test = map(np.asarray, embed(params, x_test, y_test))
  metrics = correlation_metrics(zx_train, zy_train, zx_test, zy_test, ridge=1e-3)
  metrics.update({f"probe_{k}": v for k, v in linear_probe(
      zx_train, labels_train, zx_test, labels_test, num_classes=10).items()})
  print(f"{time.perf_counter() - start:.1f} s. Held-out: total correlation "
        f"{metrics['held_out_total_correlation']:.3f} "
        f"(train {metrics['train_total_correlation']:.3f}), top "
        f"{metrics['held_out_top_correlation']:.3f}; linear probe on f(view1): top-1 "
        f"{metrics['probe_top1']:.3f} (chance 0.1)")
  return metrics


if __name__ == "__main__":
  main()
