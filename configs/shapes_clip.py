"""CLIP on the embedded shapes data: the default config and the README demo (2-core CPU, minutes).

    python train.py --config configs/shapes_clip.py --workdir /tmp/shapes_clip
    python eval.py --config configs/shapes_clip.py --workdir /tmp/shapes_clip

Trains a small CNN image tower + a one-layer word-level text transformer with the symmetric
InfoNCE loss over the global batch; zero-shot accuracy on shapes test (seen colour-shape pairs)
and test_unseen (pairs never seen in training) among all 48 class names, and retrieval, are
evaluated every 500 steps (metrics.jsonl) and printed at the end. eval.py adds a linear probe,
cross-modal transfer and embedding arithmetic.

Why these choices (measured on a 2-core CPU, BENCHMARKS.md "Demo"): a from-scratch tiny ViT learned
colour but hardly shape in the time budget (shape 24% after 500 steps, chance 17%), while a CNN with
max pooling learns shape in a few hundred steps. A plain CNN binds colour and shape together (0.56
on unseen pairs, each mistaken for a seen shape of the same colour); hue_pool=True makes its shape
features invariant to a cyclic RGB permutation and reads colour from a separate pointwise layer, so
an unseen pair is read as its colour plus its shape (0.93). Word tokens make captions 12 tokens
instead of ~45 bytes; small batches (64) give more updates per second of CPU. A ViT image tower and
the byte tokenizer remain config choices (model.image without arch='cnn', tokenizer='byte').
"""
from configs import common


def get_config(variant: str = ""):
  """variant "tiny": a few steps on little data, for tests."""
  common.check_variant(variant)
  c = common.base("clip", batch_size=64, total_steps=2000, lr=3e-3, warmup_steps=100)
  c.dataset = common.shapes_data(variant)
  c.model = common.cpu_towers(variant)
  c.tokenizer = "word"   # over the shapes vocabulary (78 words); "byte" needs no vocabulary
  c.context_length = 32  # word tokens (also the text tower's context): captions have <= 30
  c.evals = common.two_tower_evals(every=500)
  if variant == "tiny":
    common.tiny(c, batch_size=32)
  return c
