"""SigLIP (pairwise sigmoid loss) on the embedded shapes data, with the shapes demo's towers.

    python train.py --config configs/shapes_siglip.py --workdir /tmp/shapes_siglip
"""
from configs import common


def get_config(variant: str = ""):
  """variant "tiny": a few steps on little data, for tests."""
  common.check_variant(variant)
  c = common.base("siglip", batch_size=64, total_steps=2000, lr=3e-3, warmup_steps=100)
  c.dataset = common.shapes_data(variant)
  c.model = common.cpu_towers(variant)
  c.tokenizer, c.context_length = "word", 32
  c.evals = common.two_tower_evals(every=500)
  if variant == "tiny":
    common.tiny(c, batch_size=32)
  return c
