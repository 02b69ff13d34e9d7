"""Deep CCA (Andrew et al. 2013, "Deep Canonical Correlation Analysis"): two MLP view networks
f(x), g(y) trained to maximise the canonical correlations of their outputs over the batch.

    python train.py --config configs/digits_dcca.py --workdir /tmp/digits_dcca

config.model: hidden (widths), out_dim. config.cca_k: 0 sums all correlations (trace norm), k > 0
the top k; config.cca_ridge: covariance ridge. CCA needs whole-batch covariances: the loss sees
the global batch (XLA gathers the statistics across devices). Evaluators by default: canonical
correlations of held-out embeddings.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from mmjax import losses
from mmjax.models.mlp import MlpEncoder
from mmjax.tasks import common


class TwoViewMlp(nn.Module):
  """Deep CCA's two view networks f(x) and g(y): flattened views -> (B, out_dim) each."""
  hidden: Sequence[int]
  out_dim: int

  @nn.compact
  def __call__(self, view1, view2):
    flat = lambda v: v.reshape(v.shape[0], -1)  # noqa: E731
    return (MlpEncoder(self.hidden, self.out_dim, name="f")(flat(view1)),
            MlpEncoder(self.hidden, self.out_dim, name="g")(flat(view2)))


def build_model(config) -> TwoViewMlp:
  """TwoViewMlp(config.model.hidden, config.model.out_dim)."""
  return TwoViewMlp(tuple(config.model.hidden), config.model.out_dim)


def model_inputs(batch) -> tuple:
  """(view1 (B, S, S, 1), view2 (B, S, S, 1))."""
  return batch["view1"], batch["view2"]


def outputs(model) -> dict:
  """'view1': f(view1), 'view2': g(view2), each (B, out_dim)."""
  both = lambda v, b: model.apply(v, *model_inputs(b))  # noqa: E731
  return {"view1": lambda v, b: both(v, b)[0], "view2": lambda v, b: both(v, b)[1]}


def cca_objective(config) -> dict:
  """cca_loss keyword arguments from config.cca_k and config.cca_ridge."""
  k = config.get("cca_k", 0) or None
  return dict(objective="topk" if k else "trace", k=k, ridge=config.get("cca_ridge", 1e-3))


def make_loss_fn(model, config, mesh):
  """-(sum of canonical correlations) of f(view1), g(view2) over the global batch."""
  del mesh
  def loss_fn(params, batch):
    zx, zy = model.apply({"params": params}, *model_inputs(batch))
    loss = losses.cca_loss(zx, zy, **cca_objective(config))
    return loss, {"correlation": -loss}
  return loss_fn


def evals(config, dataset) -> dict:
  """Canonical correlations of the eval splits' embeddings, after the last step."""
  del config, dataset
  return {"correlation": {"type": "correlation", "every": 0}}


TASK = common.Task(
    name="dcca", build_model=build_model, example_batch=common.two_view_batch,
    model_inputs=model_inputs, make_loss_fn=make_loss_fn, outputs=outputs, evals=evals)
"""The deep CCA task."""
