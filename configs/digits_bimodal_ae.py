"""The bimodal autoencoder (Ngiam et al. 2011) on the two-view digits: reconstruct both views from
both, from view 1 alone and from view 2 alone.

    python train.py --config configs/digits_bimodal_ae.py --workdir /tmp/digits_bimodal

Prints a linear probe on the shared code and cross-modal transfer between the codes of each view
alone ("hearing to see": a classifier fitted on view-1 codes, tested on view-2 codes).
"""
from configs import common


def get_config(variant: str = ""):
  """variant "tiny": a few steps, for tests."""
  common.check_variant(variant)
  c = common.base("bimodal_ae", batch_size=256, total_steps=600, lr=1e-3, warmup_steps=20,
                  weight_decay=1e-4)
  c.dataset = common.dataset("digits", image_size=28)
  c.model = dict(hidden=(256,), shared_dim=64)
  c.evals = {"probe": dict(type="probe", every=200, output="shared"),
             "transfer": dict(type="transfer", every=0, outputs=("shared_view1", "shared_view2"))}
  if variant == "tiny":
    c.model.hidden = (32,)
    common.tiny(c, batch_size=64)
  return c
