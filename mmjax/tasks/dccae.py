"""DCCAE (Wang et al. 2015, "On Deep Multi-View Representation Learning"): deep CCA plus an
autoencoder per view, loss = cca_loss(f(x), g(y)) + lam / n * (||x - p(f(x))||^2 + ||y - q(g(y))||^2).

    python train.py --config configs/digits_dccae.py --workdir /tmp/digits_dccae

config.model: hidden (encoder widths; decoders mirror them), latent_dim, lam (the weight of the
reconstruction errors; 0 is deep CCA). config.cca_k / cca_ridge as the dcca task. Views are
flattened to (B, S * S) vectors. Evaluators by default: canonical correlations of held-out latent
codes, as for deep CCA.
"""
from __future__ import annotations

from mmjax import losses
from mmjax.models.autoencoder import DCCAE
from mmjax.tasks import common, dcca


def build_model(config) -> DCCAE:
  """DCCAE with input sizes S * S from config.dataset.image_size."""
  m, s = config.model, config.dataset.get("image_size", 28)
  return DCCAE(x_dim=s * s, y_dim=s * s, latent_dim=m.latent_dim, hidden=tuple(m.hidden))


def outputs(model) -> dict:
  """'view1': f(view1), 'view2': g(view2), the latent codes (B, latent_dim)."""
  encode = lambda v, b: model.apply(v, *common.flat_views(b), method="encode")  # noqa: E731
  return {"view1": lambda v, b: encode(v, b)[0], "view2": lambda v, b: encode(v, b)[1]}


def make_loss_fn(model, config, mesh):
  """dccae_loss over the global batch; metrics: the CCA term's correlation and the reconstruction
  error per example."""
  del mesh
  lam = config.model.get("lam", 1e-3)

  def loss_fn(params, batch):
    x, y = common.flat_views(batch)
    out = model.apply({"params": params}, x, y)
    loss = losses.dccae_loss(out.zx, out.zy, x, y, out.x_rec, out.y_rec, lam,
                             **dcca.cca_objective(config))
    correlation = -losses.cca_loss(out.zx, out.zy, **dcca.cca_objective(config))  # CSE'd by XLA
    metrics = {"correlation": correlation}
    if lam:
      metrics["reconstruction"] = (loss + correlation) / lam
    return loss, metrics
  return loss_fn


TASK = common.Task(
    name="dccae", build_model=build_model, example_batch=common.two_view_batch,
    model_inputs=common.flat_views, make_loss_fn=make_loss_fn, outputs=outputs, evals=dcca.evals)
"""The DCCAE task."""
