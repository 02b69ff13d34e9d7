"""The jitted, sharded train step: forward, loss over the global batch, backward, optax update."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mmjax import parallel
from mmjax.train.state import TrainState


def make_train_step(loss_fn, tx: optax.GradientTransformation, mesh, state_shardings):
  """jit(step)(state, batch) -> (state, metrics), with the state donated and kept sharded; the
  batch (a dict of arrays) is split over the mesh's batch axes, whatever its keys.

  loss_fn(params, batch) -> (loss, metrics). Metrics come back replicated and stay on device: the
  loop reads them only when it logs, so the step never waits on the host. Besides the task's
  metrics: loss, grad_norm and param_norm (the norm of the updated params, the state a checkpoint
  of this step would hold): a non-finite one marks a state that must not be saved.
  """
  def step(state: TrainState, batch: dict):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params)}
    return TrainState(state.step + 1, params, opt_state), jax.tree.map(jnp.float32, metrics)

  compiled = {}

  def call(state: TrainState, batch: dict):
    signature = tuple(sorted((k, v.ndim) for k, v in batch.items()))
    if signature not in compiled:
      batch_shardings = {k: parallel.batch_sharding(mesh, ndim) for k, ndim in signature}
      compiled[signature] = jax.jit(
          step, in_shardings=(state_shardings, batch_shardings),
          out_shardings=(state_shardings, parallel.replicated(mesh)), donate_argnums=0)
    return compiled[signature](state, batch)
  return call
