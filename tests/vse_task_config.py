"""The config of tests/vse_task.py: the tiny shapes data and towers, evaluated every 3 steps.

    python train.py --config tests/vse_task_config.py --workdir /tmp/vse
"""
from configs import common


def get_config(variant: str = ""):
  """The only variant: tiny."""
  common.check_variant(variant)
  c = common.base("tests.vse_task", batch_size=32, total_steps=6, warmup_steps=1, lr=3e-3,
                  log_every=3, checkpoint_every=3)
  c.dataset = common.shapes_data("tiny")
  c.model = common.cpu_towers("tiny")
  c.tokenizer, c.context_length = "word", 32
  c.margin = 0.2
  c.evals = {"zero_shot": dict(type="zero_shot", every=3),
             "pair_cosine": dict(type="tests.vse_task.pair_cosine", every=3)}
  return c
