"""A supervised fusion model on shapes: image tower + caption tower, fused, then class logits.

    python examples/fusion_shapes.py                  # low-rank fusion, 300 steps, minutes on a CPU
    python examples/fusion_shapes.py --fusion gated   # concat | tensor | lowrank | gated | late
    python examples/fusion_shapes.py --tiny           # 256 examples, 5 steps (what CI runs)

Each shapes image (64 x 64) shows a coloured shape and comes with a caption; the label is the
primary object's (colour, shape) class, one of 48. The image goes through a small ViT and the
caption, as UTF-8 bytes, through a small causal text transformer (both from mmjax.models); the
fusion task's FusionClassifier (mmjax.tasks.fusion, what configs/shapes_fusion.py trains) combines
the two feature vectors with a fusion module named like the config's model.fusion, and a Dense
layer gives the logits.

After training, mmjax.quantify.modality_contribution measures how much the accuracy depends on each
modality: with the image (or the caption) zeroed, and with it taken from another example. Shapes
captions name the class, so expect the fused model to lean on the caption; that is exactly what
the probe is for. (configs/shapes_fusion.py trains the same kind of model with train.py.)
"""
from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import numpy as np
import optax

from mmjax.data import pipeline
from mmjax.data.shapes import CLASS_NAMES, Shapes
from mmjax.data.tokenizers import ByteTokenizer
from mmjax.models import TextTransformer, ViT
from mmjax.quantify import modality_contribution
from mmjax.tasks.fusion import FusionClassifier

WIDTH = 32
FUSIONS = {   # --fusion -> config.model.fusion: the module and its arguments
    "concat": dict(type="concat", out_dim=WIDTH),               # W [x1; x2] + b
    "tensor": dict(type="tensor", out_dim=WIDTH),               # W vec([1; x1] (x) [1; x2]) + b
    "lowrank": dict(type="lowrank", out_dim=WIDTH, rank=4),     # TFN with a rank-4 CP weight
    "gated": dict(type="gated", features=WIDTH),                # GMU: a gated sum
    "late": dict(type="late", out_dim=len(CLASS_NAMES)),        # per-modality logits, averaged
}


def classifier(fusion: str) -> FusionClassifier:
  """images (B, 64, 64, 3), tokens (B, L) -> (B, 48) class logits through one fusion module."""
  image = ViT(patch_size=8, width=WIDTH, depth=1, num_heads=2, mlp_dim=2 * WIDTH)  # (B, WIDTH)
  text = TextTransformer(vocab_size=259, context_length=64, width=WIDTH, depth=1, num_heads=2,
                         mlp_dim=2 * WIDTH)                                       # (B, WIDTH)
  return FusionClassifier(image, text, FUSIONS[fusion], num_classes=len(CLASS_NAMES))


def load_split(builder, split: str, limit: int, tokenizer):
  """(images (n, 64, 64, 3) float32 in [0, 1], tokens (n, L) int32, labels (n,)) of a split."""
  source = builder.as_data_source(split=split)
  rows = [source[i] for i in range(min(limit, len(source)))]
  images = np.stack([r["image"] for r in rows]).astype(np.float32) / 255.0
  tokens = tokenizer([r["caption"].decode() for r in rows])
  return images, tokens, np.asarray([r["label"] for r in rows], np.int32)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default="~/.cache/mmjax/datasets",
                      help="where the dataset is prepared (once) and read")
  parser.add_argument("--fusion", choices=FUSIONS, default="lowrank")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--train_examples", type=int, default=8000)
  parser.add_argument("--tiny", action="store_true",
                      help="a 256-example dataset variant and 5 steps (for CI)")
  args = parser.parse_args(argv)
  # The default dataset is the one the README's quick start prepares; --tiny builds a small one.
  sizes = dict(num_train=256, num_test=48, num_test_unseen=24) if args.tiny else {}
  if args.tiny:
    args.steps, args.batch_size = 5, 32

  builder = pipeline.prepare(Shapes, args.data_dir, **sizes)
  tokenizer = ByteTokenizer(context_length=64)
  train = load_split(builder, "train", args.train_examples, tokenizer)
  test = load_split(builder, "test", 2000, tokenizer)
  print(f"{args.fusion} fusion; train {len(train[2])} examples, test {len(test[2])}")

  model = classifier(args.fusion)
  # jit: one compilation of the whole init, rather than one per operation
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), train[0][:1], train[1][:1])["params"])
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 2e-3, 20, max(args.steps, 21)))
  opt_state = tx.init(params)

  def loss_fn(params, images, tokens, labels):
    logits = model.apply({"params": params}, images, tokens)             # (B, 48)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def train_step(params, opt_state, images, tokens, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, tokens, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(0)
  start = time.perf_counter()
  for step in range(1, args.steps + 1):
    idx = rng.choice(len(train[2]), args.batch_size, replace=False)
    params, opt_state, loss = train_step(params, opt_state, *(x[idx] for x in train))
    if step == 1 or step % max(args.steps // 5, 1) == 0 or step == args.steps:
      print(f"step {step:4d}  loss {float(loss):.4f}")

  # How much does the accuracy depend on each modality? f(a, b) -> logits, a/b: images/tokens.
  predict = lambda images, tokens: model.apply({"params": params}, images, tokens)  # noqa: E731
  result = modality_contribution(predict, test[0], test[1], test[2], key=jax.random.key(1),
                                 names=("image", "caption"))
  print(f"{time.perf_counter() - start:.1f} s. Test accuracy {result['accuracy']:.3f} "
        f"(chance {1 / len(CLASS_NAMES):.3f})")
  for probe in ("without_image", "without_caption", "mismatched_image", "mismatched_caption"):
    print(f"  {probe:20s} {result[probe]:.3f}  (drop {result[probe + '_drop']:+.3f})")
  return result


if __name__ == "__main__":
  main()
