"""Orbax checkpoints of the train state, the data iterator position and the config.

Saves are asynchronous (training goes on while the arrays are written) and atomic: orbax writes a
step into a temporary folder and renames it when complete, so a process killed during a save leaves
no step that restore could pick, and the previous checkpoint is used.

A finished step can still be damaged later (a file deleted, truncated or overwritten). restore()
walks back from the newest step to the newest one that reads completely and prints one line per
step it skips. A skipped step is kept, renamed `N.damaged` (`N.damaged-2`, ... if taken): orbax
lists only folders named by a bare step number, so it ignores the renamed folder, and the resumed
run can save step N again. With every step damaged, or a damaged step asked for by number, restore
raises a UserError naming each step and why, and renames nothing. A failed read is quiet: orbax's
log lines and the errors of its abandoned reads ("Event loop is closed") are not shown.

Multi-host: every process reads the same files and they agree (an all-gather) whether a step
restored everywhere; process 0 renames the damaged steps, then all meet at a barrier and re-list.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from mmjax import paths
from mmjax.errors import UserError

DAMAGED = ".damaged"
"""Suffix of a damaged step's folder: `6.damaged` is no step name to orbax (digits only)."""


def manager(workdir, *, keep: int, every: int, async_save: bool = True) -> ocp.CheckpointManager:
  """An orbax CheckpointManager for workdir/checkpoints: items 'state', 'data' and 'config',
  `keep` latest steps kept, a save every `every` steps, asynchronous unless async_save=False.
  workdir: a local path (resolved) or a gs:// URI (mmjax.paths)."""
  paths.check_checkpoint_dir(workdir)
  path = paths.resolve(workdir, "workdir") / "checkpoints"
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                         enable_async_checkpointing=async_save, create=True)
  # orbax warns of a step's missing or junk _CHECKPOINT_METADATA (a time stamp it can do without);
  # whether that step is damaged is restore()'s to say
  with _absl_filter(lambda record: "_CHECKPOINT_METADATA" not in record.getMessage()):
    return ocp.CheckpointManager(path, options=options, item_names=("state", "data", "config"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: str, config,
         *, force: bool = False) -> bool:
  """Saves at `step` if the interval says so (or force); returns whether it saved."""
  return mngr.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(json.loads(data_state)),
      config=ocp.args.JsonSave(json.loads(config.to_json()))))


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None, *, check=None,
            data: bool = True, log=print):
  """(state, data state as a JSON string or None, step) of the newest step that restores
  completely, or of `step`; None when the directory holds no checkpoint.

  The state is placed with abstract_state's shardings (any mesh, not only the one that saved).
  check(step), when given, runs before the state of each step is read; its UserError (the
  checkpoint does not fit the config) propagates, any other exception marks the step damaged.
  data=False restores the state only (the caller restarts the data position), so damage to the
  data item does not matter.
  A damaged step is skipped with a line through `log` (process 0) and renamed `N.damaged`; a
  damaged `step`, or every step damaged, raises a UserError naming each step and the reason."""
  steps = sorted(mngr.all_steps(), reverse=True)
  if step is not None:
    return _restore_step(mngr, abstract_state, step, steps, check, data)
  damaged = []
  for candidate in steps:
    restored, reason = _attempt(mngr, abstract_state, candidate, check, data)
    if restored is not None:
      _set_aside(mngr, damaged, log)
      return (*restored, candidate)
    damaged.append((candidate, reason))
  if damaged:
    raise UserError(_all_damaged(mngr.directory, damaged))
  return None


def _restore_step(mngr, abstract_state, step, steps, check, data):
  if step not in steps:
    raise UserError(f"no checkpoint step {step} in {mngr.directory}: it holds steps "
                    f"{sorted(steps)}")
  restored, reason = _attempt(mngr, abstract_state, step, check, data)
  if restored is None:
    raise UserError(f"checkpoint step {step} in {mngr.directory} is damaged ({reason}); choose "
                    f"another of its steps {sorted(s for s in steps if s != step)}")
  return (*restored, step)


def _attempt(mngr, abstract_state, step, check, data):
  """((state, data state or None), None) when `step` restored on every process, else
  (None, reason): the item that failed, the exception's type and the start of its message."""
  item, restored = "data", None
  try:
    with _quiet():
      data_state = _read_data(mngr, step) if data else None
      item = "state"  # its tree metadata first: what check reads, so damage there is named here
      with contextlib.closing(ocp.PyTreeCheckpointHandler()) as handler:
        handler.metadata(mngr.directory / str(step) / "state")
      item = "check"
      if check is not None:
        check(step)
      item = "state"
      state = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state))).state
      restored = (state, data_state)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-exception-caught  # any failure to read is damage
    reason = f"{item}: {_describe(e)}"
  if _everywhere(restored is not None):
    return restored, None
  return None, reason if restored is None else "it failed to restore on another process"


def _read_data(mngr, step: int) -> str:
  value = mngr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
  if not isinstance(value, dict):
    raise ValueError(f"the iterator state is a JSON {type(value).__name__}, not an object")
  return json.dumps(value)


def _describe(e: Exception) -> str:
  """'KeyError: Item "state" was not found ...': the type and the first line of the message,
  without tensorstore's spec dump, at most 200 characters."""
  text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  for cut in ("\n", " [tensorstore_spec", " See full TensorStore"):
    text = text.split(cut)[0]
  return f"{type(e).__name__}: {text[:197] + '...' if len(text) > 200 else text}"


def _everywhere(ok: bool) -> bool:
  """Whether `ok` holds on every process (all processes call this for the same step)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _set_aside(mngr, damaged, log) -> None:
  """Renames each damaged step out of orbax's listing (process 0, after every process failed on
  it), says so once per step, and has the manager list its steps again."""
  if not damaged:
    return
  if jax.process_index() == 0:
    for step, reason in damaged:
      kept = _rename(mngr.directory, step)
      log(f"checkpoint step {step} in {mngr.directory} is damaged ({reason}): skipped; kept as "
          f"{kept}")
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("mmjax.checkpoint: damaged steps renamed")
  mngr.reload()


def _rename(directory, step: int):
  target, n = directory / f"{step}{DAMAGED}", 2
  while target.exists():
    target, n = directory / f"{step}{DAMAGED}-{n}", n + 1
  (directory / str(step)).rename(target)
  return target


def _all_damaged(directory, damaged) -> str:
  steps = "; ".join(f"step {step} ({reason})" for step, reason in damaged)
  return (f"every checkpoint in {directory} is damaged, none renamed: {steps}. To start over, "
          f"train with another --workdir, or move {directory} away")


@contextlib.contextmanager
def _absl_filter(keep):
  """Passes orbax's log records (the 'absl' logger) through keep(record) -> bool meanwhile."""
  logger = logging.getLogger("absl")
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


@contextlib.contextmanager
def _quiet():
  """Holds back orbax's log records while a step is read: they are passed on if it reads, dropped
  if it fails (the skip line says why). Installs _drop_closed_loop_errors."""
  held = []
  _install_unraisable_filter()
  with _absl_filter(lambda record: held.append(record)):  # None: not logged now
    yield
  for record in held:  # reached only when the read succeeded
    logging.getLogger("absl").handle(record)


_previous_unraisablehook = None


def _drop_closed_loop_errors(unraisable) -> None:
  """sys.unraisablehook: when one read of a restore fails, orbax closes its event loop while other
  tensorstore reads are still in flight; each of those then raises 'Event loop is closed' in a
  callback nobody awaits. Drops exactly those; passes on everything else."""
  e = unraisable.exc_value
  if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
    _previous_unraisablehook(unraisable)


def _install_unraisable_filter() -> None:
  """Once per process (the in-flight reads may finish after restore() has returned)."""
  global _previous_unraisablehook  # pylint: disable=global-statement
  if _previous_unraisablehook is None:
    _previous_unraisablehook, sys.unraisablehook = sys.unraisablehook, _drop_closed_loop_errors


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings (for restore onto any mesh)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)
