"""The model to evaluate: params restored from a train.py workdir, or imported CLIP weights.

    model, params, step = restore_params(config, workdir, mesh, step=None)   # latest by default
    model, params, tokenizer, image_size = load_weights(path, mesh, bpe_path=None)

Both place every parameter on the mesh by its logical axis names (mmjax.parallel). A checkpoint that
does not match the config raises a ValueError naming the workdir, the step, the parameters whose
shapes differ and the config entries that differ from the ones the checkpoint was saved with.
"""
from __future__ import annotations

import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from mmjax import parallel, tasks
from mmjax.train import checkpoint

_MODEL_KEYS = ("task", "model", "context_length", "tokenizer", "dataset.image_size", "lock")
WEIGHTS_TASK = "clip"
"""The task of imported CLIP weights (load_weights): a two-tower model."""


def _keyed(tree) -> dict[str, tuple]:
  return {jax.tree_util.keystr(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _get(tree: dict, dotted: str):
  for part in dotted.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return tree


def _config_diff(saved: dict, config) -> list[str]:
  """'key: checkpoint X, config Y' for the model-defining config entries that differ."""
  given = config.to_dict()
  out = []
  for key in _MODEL_KEYS:
    a, b = _get(saved, key), _get(given, key)
    if a != b and not (isinstance(a, list) and tuple(a) == b):
      out.append(f"{key}: checkpoint {a!r}, config {b!r}")
  return out


def shape_mismatches(saved: dict, expected: dict) -> list[str]:
  """Human-readable differences between two {path: shape} maps (missing, unexpected, reshaped)."""
  out = [f"{p}: checkpoint {saved[p]}, model {expected[p]}"
         for p in sorted(set(saved) & set(expected)) if saved[p] != expected[p]]
  out += [f"{p}: missing from the checkpoint" for p in sorted(set(expected) - set(saved))]
  out += [f"{p}: in the checkpoint, not in the model" for p in sorted(set(saved) - set(expected))]
  return out


def _step_dir(workdir: pathlib.Path, step: int | None) -> tuple[ocp.CheckpointManager, int]:
  if not (workdir / "checkpoints").is_dir():
    raise FileNotFoundError(f"no checkpoints in {workdir} (looked for {workdir / 'checkpoints'}): "
                            "train there with train.py first, or pass --weights")
  mngr = checkpoint.manager(workdir, keep=1, every=1, async_save=False)
  steps = mngr.all_steps()
  if not steps:
    raise FileNotFoundError(f"{workdir / 'checkpoints'} holds no finished checkpoint")
  if step is None:
    step = max(steps)
  if step not in steps:
    raise ValueError(f"--checkpoint {step}: {workdir / 'checkpoints'} has steps {sorted(steps)}")
  return mngr, step


def restore_params(config, workdir, mesh: Mesh, step: int | None = None):
  """(model, params placed on mesh, step) of the latest (or given) checkpoint in workdir."""
  workdir = pathlib.Path(workdir).expanduser().resolve()
  mngr, step = _step_dir(workdir, step)
  task = tasks.get(config.task)
  model = task.build_model(config)
  boxed = jax.eval_shape(task.init_fn(model, config), jax.random.key(0))["params"]
  shardings = nn.unbox(parallel.logical_shardings(boxed, mesh))
  target = checkpoint.abstract_with_shardings(nn.unbox(boxed), shardings)
  path = workdir / "checkpoints" / str(step) / "state"
  saved = ocp.PyTreeCheckpointHandler().metadata(path).tree
  problems = shape_mismatches(_keyed(saved["params"]), _keyed(target))
  if problems:
    saved_config = mngr.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore())).config
    diff = _config_diff(saved_config, config)
    raise ValueError(
        f"checkpoint {path.parent} (step {step}) does not match the config: {len(problems)} "
        f"parameter(s) differ, e.g. {'; '.join(problems[:4])}. Config entries that differ from "
        f"the checkpoint's: {'; '.join(diff) or 'none of ' + str(_MODEL_KEYS)}. Evaluate with "
        "the config the checkpoint was trained with.")
  item = {"params": target}
  try:
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
      restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True))
  except Exception as e:  # orbax's own errors do not say which run or step
    raise ValueError(f"could not restore the params of {path.parent} (step {step}) for this "
                     f"config: {type(e).__name__}: {e}") from e
  return model, restored["params"], step


def load_weights(path, mesh: Mesh, *, bpe_path: str | None = None, **clip_kwargs):
  """(model, params placed on mesh, ClipTokenizer, image size) of imported CLIP weights."""
  from mmjax.convert.clip import load_clip  # pylint: disable=import-outside-toplevel
  from mmjax.data.tokenizers import ClipTokenizer  # pylint: disable=import-outside-toplevel
  model, variables = load_clip(path, **clip_kwargs)
  params = variables["params"]
  positions = params["image_encoder"]["pos_embed"].shape[0]
  image_size = model.image_encoder.patch_size * math.isqrt(positions - 1)
  try:
    tokenizer = ClipTokenizer(bpe_path, context_length=model.text_encoder.context_length)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"--weights {path}: CLIP weights need CLIP's BPE tokenizer, and its "
                            f"vocabulary was not found. {e}") from e
  boxed = jax.eval_shape(model.init, jax.random.key(0),
                         jnp.zeros((1, image_size, image_size, 3)),
                         jnp.zeros((1, model.text_encoder.context_length), jnp.int32))["params"]
  shardings = nn.unbox(parallel.logical_shardings(boxed, mesh))
  return model, jax.device_put(params, shardings), tokenizer, image_size
