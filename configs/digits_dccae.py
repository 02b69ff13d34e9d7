"""DCCAE (Wang et al. 2015): deep CCA plus a decoder per view, on the two-view digits.

    python train.py --config configs/digits_dccae.py --workdir /tmp/digits_dccae

The loss adds lam times the reconstruction error per example to the deep CCA loss (lam = 0 is deep
CCA); prints the canonical correlations of held-out latent codes.
"""
from configs import common


def get_config(variant: str = ""):
  """variant "tiny": a few steps, for tests."""
  common.check_variant(variant)
  c = common.base("dccae", batch_size=400, total_steps=600, lr=1e-3, warmup_steps=20,
                  weight_decay=1e-4)
  c.dataset = common.dataset("digits", image_size=28)
  c.model = dict(hidden=(256, 256), latent_dim=10, lam=1e-3)
  c.cca_k, c.cca_ridge = 0, 1e-3
  c.evals = {"correlation": dict(type="correlation", every=200)}
  if variant == "tiny":
    c.model.hidden = (32,)
    common.tiny(c, batch_size=64)
  return c
