"""Does a checkpoint fit the config? Checked before restoring, so a mismatch is one clear message
naming the parameters and config fields that differ, not an orbax or grain traceback.

    check = compat.resume_check(mngr, abstract_state, config, data_state=batches.get_state())
    checkpoint.restore(mngr, abstract_state, check=check)     # UserError from check propagates

The model must match (parameter shapes; optimizer state shapes), and so must the data pipeline
(grain's sampler and source: batch size, seed, dataset, process count) unless the run restarts the
data position (train.py --restart_data).
"""
from __future__ import annotations

import contextlib
import json

import jax
import orbax.checkpoint as ocp

from mmjax.errors import UserError

MODEL_KEYS = ("task", "model", "context_length", "tokenizer", "vocabulary", "dataset.image_size",
              "dataset.name", "lock")
OPTIMIZER_KEYS = ("grad_accum", "lock", "grad_clip", "weight_decay")
DATA_KEYS = ("batch_size", "seed", "dataset.name", "dataset.builder_kwargs",
             "dataset.train_split", "dataset.cache")   # not worker_count: batches do not depend on it
DATA_FIELDS = ("sampler", "data_source", "worker_count")   # what grain compares on restore


def keyed(tree) -> dict[str, tuple]:
  """{path: shape} of every array leaf (paths as jax.tree_util.keystr writes them)."""
  return {jax.tree_util.keystr(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shape_mismatches(saved: dict, expected: dict) -> list[str]:
  """Human-readable differences between two {path: shape} maps (missing, unexpected, reshaped)."""
  out = [f"{p}: checkpoint {saved[p]}, model {expected[p]}"
         for p in sorted(set(saved) & set(expected)) if saved[p] != expected[p]]
  out += [f"{p}: missing from the checkpoint" for p in sorted(set(expected) - set(saved))]
  out += [f"{p}: in the checkpoint, not in the model" for p in sorted(set(saved) - set(expected))]
  return out


def _flat(tree, prefix: str = "") -> dict:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out or {prefix[:-1]: {}}
  return {prefix[:-1]: tuple(tree) if isinstance(tree, list) else tree}


def config_diff(saved: dict, config, keys) -> list[str]:
  """'field: checkpoint X, config Y' for every leaf under `keys` that differs between the config
  saved with a checkpoint (a dict) and `config` (a ConfigDict)."""
  saved, given = _flat(saved), _flat(json.loads(config.to_json()))
  fields = sorted({f for f in set(saved) | set(given)
                   if any(f == k or f.startswith(k + ".") for k in keys)})
  return [f"{f}: checkpoint {saved.get(f)!r}, config {given.get(f)!r}" for f in fields
          if saved.get(f) != given.get(f)]


def saved_json(mngr: ocp.CheckpointManager, step: int, item: str) -> dict:
  """The JSON item ('config' or 'data') saved with a checkpoint step."""
  args = ocp.args.Composite(**{item: ocp.args.JsonRestore()})
  return dict(mngr.restore(step, args=args)[item])


def saved_state_shapes(mngr: ocp.CheckpointManager, step: int) -> dict:
  """The saved train state's metadata tree ({'step', 'params', 'opt_state'}), arrays unread."""
  with contextlib.closing(ocp.PyTreeCheckpointHandler()) as handler:
    return handler.metadata(mngr.directory / str(step) / "state").tree


def _opt_shapes(tree) -> list:
  return sorted(str(tuple(x.shape)) for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


def _start_over(directory) -> str:
  return (f"Train with the config the checkpoint was saved with, or start over in another "
          f"--workdir (or move {directory} away)")


def check_model(mngr, step: int, params, config, opt_state=None, *, advice: str = "") -> None:
  """UserError when the checkpoint's parameter shapes (and, given opt_state, its optimizer state
  shapes) differ from the abstract `params` / `opt_state` the config builds, naming them and the
  differing config fields; `advice` ends the message (default: how to resume or start over)."""
  saved = saved_state_shapes(mngr, step)
  where = mngr.directory / str(step)
  advice = advice or _start_over(mngr.directory)
  problems = shape_mismatches(keyed(saved["params"]), keyed(params))
  if problems:
    diff = config_diff(saved_json(mngr, step, "config"), config, MODEL_KEYS)
    raise UserError(
        f"checkpoint {where} (step {step}) does not match the config: {len(problems)} "
        f"parameter(s) differ, e.g. {'; '.join(problems[:4])}. Config fields that differ from "
        f"the checkpoint's: {'; '.join(diff) or 'none of ' + str(MODEL_KEYS)}. {advice}.")
  if opt_state is not None and _opt_shapes(saved["opt_state"]) != _opt_shapes(opt_state):
    diff = config_diff(saved_json(mngr, step, "config"), config, OPTIMIZER_KEYS)
    raise UserError(
        f"checkpoint {where} (step {step}): the optimizer state does not match the optimizer the "
        f"config builds. Config fields that differ: "
        f"{'; '.join(diff) or 'none of ' + str(OPTIMIZER_KEYS)}. {advice}.")


def check_data(mngr, step: int, data_state: str, config) -> None:
  """UserError when the checkpoint's input pipeline position cannot continue in this config's
  pipeline (another batch size, seed, dataset or process count), naming what differs."""
  saved = saved_json(mngr, step, "data")
  now = json.loads(data_state)
  differ = [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in DATA_FIELDS
            if saved.get(k) != now.get(k)]
  if differ:
    where = mngr.directory / str(step)
    diff = config_diff(saved_json(mngr, step, "config"), config, DATA_KEYS)
    raise UserError(
        f"checkpoint {where} (step {step}) holds the position of another input pipeline: "
        f"{'; '.join(differ)}. Config fields that differ: {'; '.join(diff) or 'none of ' + str(DATA_KEYS)}"
        f" (or the number of processes). Keep the weights and start the data from the beginning "
        f"with train.py --restart_data, or {_start_over(mngr.directory).lower()}.")


def resume_check(mngr, abstract_state, config, data_state: str | None):
  """check(step) for checkpoint.restore: the model always, the data pipeline when data_state (the
  current pipeline's state) is given."""
  def check(step: int) -> None:
    check_model(mngr, step, abstract_state.params, config, abstract_state.opt_state)
    if data_state is not None:
      check_data(mngr, step, data_state, config)
  return check
