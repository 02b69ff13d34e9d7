"""A supervised fusion model on shapes: image tower + caption tower, low-rank fusion (Liu et al.
2018), classifying the primary object's (colour, shape) class.

    python train.py --config configs/shapes_fusion.py --workdir /tmp/shapes_fusion
    python train.py --config configs/shapes_fusion.py --workdir /tmp/shapes_gated \
        --config.model.fusion='{"type": "gated", "features": 64}'

model.fusion names any fusion module of mmjax.models.fusion with its arguments (mmjax.tasks.fusion).
"""
from configs import common


def get_config(variant: str = ""):
  """variant "tiny": a few steps on little data, for tests."""
  common.check_variant(variant)
  c = common.base("fusion", batch_size=64, total_steps=400, lr=3e-3, warmup_steps=100)
  c.dataset = common.shapes_data(variant, eval_splits=("test",))  # test_unseen: never a label
  c.model = common.cpu_towers(variant)
  c.model.fusion = dict(type="lowrank", out_dim=64, rank=4)
  c.model.num_classes = 48
  c.tokenizer, c.context_length = "word", 32
  c.evals = {"accuracy": dict(type="accuracy", every=100)}
  if variant == "tiny":
    common.tiny(c, batch_size=32)
  return c
