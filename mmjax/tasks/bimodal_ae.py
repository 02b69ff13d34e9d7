"""The bimodal deep autoencoder (Ngiam et al. 2011, "Multimodal Deep Learning"): per-view encoders,
one shared layer, decoders for both views, trained to reconstruct both views from both, from view 1
alone and from view 2 alone (the missing view fed as zeros), so the shared code of either view
alone stands for the pair ("hearing to see").

    python train.py --config configs/digits_bimodal_ae.py --workdir /tmp/digits_bimodal

config.model: hidden (encoder widths per view; decoders mirror them), shared_dim. Views are
flattened to (B, S * S) vectors. Evaluators by default: a linear probe on the shared code of both
views, and cross-modal transfer between the codes of view 1 alone and view 2 alone (a classifier
fitted on one, tested on the other).
"""
from __future__ import annotations

from mmjax import losses
from mmjax.models.autoencoder import BimodalAutoencoder
from mmjax.tasks import common


def build_model(config) -> BimodalAutoencoder:
  """BimodalAutoencoder with input sizes S * S from config.dataset.image_size."""
  m, s = config.model, config.dataset.get("image_size", 28)
  return BimodalAutoencoder(x_dim=s * s, y_dim=s * s, hidden=tuple(m.hidden),
                            shared_dim=m.shared_dim)


def outputs(model) -> dict:
  """'shared' (both views), 'shared_view1' (view 1 alone), 'shared_view2' (view 2 alone): the
  shared codes, (B, shared_dim) each."""
  def code(present):
    return lambda v, b: model.apply(v, *common.flat_views(b), present, method="encode")
  return {"shared": code((1.0, 1.0)), "shared_view1": code((1.0, 0.0)),
          "shared_view2": code((0.0, 1.0))}


def make_loss_fn(model, config, mesh):
  """Reconstruction of both views under the three input conditions, averaged."""
  del config, mesh

  def loss_fn(params, batch):
    x, y = common.flat_views(batch)
    out = model.apply({"params": params}, x, y, method="augmented")       # fields (3, B, ...)
    return losses.bimodal_reconstruction_loss(x, y, out.x_rec, out.y_rec), {}
  return loss_fn


def evals(config, dataset) -> dict:
  """A probe on the shared code and view 1 <-> view 2 transfer, after the last step."""
  del config, dataset
  return {"probe": {"type": "probe", "every": 0, "output": "shared"},
          "transfer": {"type": "transfer", "every": 0,
                       "outputs": ("shared_view1", "shared_view2")}}


TASK = common.Task(
    name="bimodal_ae", build_model=build_model, example_batch=common.two_view_batch,
    model_inputs=common.flat_views, make_loss_fn=make_loss_fn, outputs=outputs, evals=evals)
"""The bimodal autoencoder task."""
