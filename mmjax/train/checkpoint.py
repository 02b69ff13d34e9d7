"""Orbax checkpoints of the train state, the data iterator position and the config.

Saves are asynchronous (training goes on while the arrays are written) and atomic: orbax writes a
step into a temporary folder and renames it when complete, so a process killed during a save leaves
no step that restore could pick, and the previous checkpoint is used.
"""
from __future__ import annotations

import json
import pathlib

import jax
import orbax.checkpoint as ocp


def manager(workdir: str | pathlib.Path, *, keep: int, every: int,
            async_save: bool = True) -> ocp.CheckpointManager:
  """An orbax CheckpointManager for workdir/checkpoints: items 'state', 'data' and 'config',
  `keep` latest steps kept, a save every `every` steps, asynchronous unless async_save=False."""
  path = pathlib.Path(workdir).expanduser().resolve() / "checkpoints"
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                         enable_async_checkpointing=async_save, create=True)
  return ocp.CheckpointManager(path, options=options, item_names=("state", "data", "config"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: str, config,
         *, force: bool = False) -> bool:
  """Saves at `step` if the interval says so (or force); returns whether it saved."""
  return mngr.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(json.loads(data_state)),
      config=ocp.args.JsonSave(json.loads(config.to_json()))))


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """(state, data_state) of the latest (or given) step, placed with abstract_state's shardings,
  which may belong to a different mesh than the one that saved; None if there is no checkpoint."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                   data=ocp.args.JsonRestore()))
  return out.state, json.dumps(out.data)


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings (for restore onto any mesh)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)
