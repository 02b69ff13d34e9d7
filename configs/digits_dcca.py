"""Deep CCA (Andrew et al. 2013) on the two-view digits (rotated digit vs another noisy image of the
same class, after Wang et al. 2015), with MLP view networks.

    python train.py --config configs/digits_dcca.py --workdir /tmp/digits_dcca

Prints the total and top canonical correlation of held-out view embeddings.
"""
from configs import common


def get_config(variant: str = ""):
  """variant "tiny": a few steps, for tests."""
  common.check_variant(variant)
  # CCA needs whole-batch covariance estimates: large batches
  c = common.base("dcca", batch_size=400, total_steps=600, lr=1e-3, warmup_steps=20,
                  weight_decay=1e-4)
  c.dataset = common.dataset("digits", image_size=28)
  c.model = dict(hidden=(256, 256), out_dim=10)
  c.cca_k = 0            # 0: all correlations (trace norm); k > 0: the top k
  c.cca_ridge = 1e-3
  c.evals = {"correlation": dict(type="correlation", every=200)}
  if variant == "tiny":
    c.model.hidden = (32,)
    common.tiny(c, batch_size=64)
  return c
