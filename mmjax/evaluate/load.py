"""The model to evaluate: params restored from a train.py workdir, or imported CLIP weights.

    model, params, step = restore_params(config, workdir, mesh, step=None)   # latest by default
    model, params, tokenizer, image_size = load_weights(path, mesh, bpe_path=None)

Both place every parameter on the mesh by its logical axis names (mmjax.parallel). A checkpoint that
does not match the config raises a UserError naming the workdir, the step, the parameters whose
shapes differ and the config fields that differ from the ones the checkpoint was saved with; a
missing or unreadable checkpoint or weights file is a UserError too.
"""
from __future__ import annotations

import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from mmjax import parallel, paths, tasks
from mmjax.errors import UserError
from mmjax.train import checkpoint, compat

WEIGHTS_TASK = "clip"
"""The task of imported CLIP weights (load_weights): a two-tower model."""


def _step_dir(workdir, step: int | None) -> tuple[ocp.CheckpointManager, int]:
  if not (workdir / "checkpoints").is_dir():
    raise UserError(f"no checkpoints in {workdir} (looked for {workdir / 'checkpoints'}): train "
                    "there with train.py first, or pass --weights")
  mngr = checkpoint.manager(workdir, keep=1, every=1, async_save=False)
  steps = mngr.all_steps()
  if not steps:
    raise UserError(f"{workdir / 'checkpoints'} holds no finished checkpoint")
  if step is None:
    step = max(steps)
  if step not in steps:
    raise UserError(f"--checkpoint {step}: {workdir / 'checkpoints'} has steps {sorted(steps)}")
  return mngr, step


def restore_params(config, workdir, mesh: Mesh, step: int | None = None):
  """(model, params placed on mesh, step) of the latest (or given) checkpoint in workdir."""
  workdir = paths.resolve(workdir, "--workdir")
  mngr, step = _step_dir(workdir, step)
  task = tasks.get(config.task)
  model = task.build_model(config)
  boxed = jax.eval_shape(task.init_fn(model, config), jax.random.key(0))["params"]
  shardings = nn.unbox(parallel.logical_shardings(boxed, mesh))
  target = checkpoint.abstract_with_shardings(nn.unbox(boxed), shardings)
  path = workdir / "checkpoints" / str(step) / "state"
  try:
    compat.check_model(mngr, step, target, config,
                       advice="Evaluate with the config the checkpoint was trained with")
    item = {"params": target}
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
      restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True))
  except UserError:
    raise
  except Exception as e:  # orbax's own errors do not say which run or step
    raise UserError(f"could not restore the params of {path.parent} (step {step}): it is damaged "
                    f"or not a train.py checkpoint ({type(e).__name__}: {str(e)[:300]}); pass "
                    "another --checkpoint") from e
  return model, restored["params"], step


def load_weights(path, mesh: Mesh, *, bpe_path: str | None = None, **clip_kwargs):
  """(model, params placed on mesh, ClipTokenizer, image size) of imported CLIP weights."""
  from mmjax.convert.clip import load_clip  # pylint: disable=import-outside-toplevel
  from mmjax.data.tokenizers import ClipTokenizer  # pylint: disable=import-outside-toplevel
  if not pathlib.Path(path).expanduser().exists():
    raise UserError(f"--weights {path}: no such file or folder")
  try:
    model, variables = load_clip(path, **clip_kwargs)
  except Exception as e:  # pylint: disable=broad-except  # safetensors, torch, json: all say "bad file"
    raise UserError(f"--weights {path}: cannot be read as OpenAI / OpenCLIP / Hugging Face CLIP "
                    f"weights ({type(e).__name__}: {str(e)[:300]})") from e
  params = variables["params"]
  positions = params["image_encoder"]["pos_embed"].shape[0]
  image_size = model.image_encoder.patch_size * math.isqrt(positions - 1)
  try:
    tokenizer = ClipTokenizer(bpe_path, context_length=model.text_encoder.context_length)
  except FileNotFoundError as e:
    raise UserError(f"--weights {path}: CLIP weights need CLIP's BPE tokenizer, and its "
                    f"vocabulary was not found. {e}") from e
  boxed = jax.eval_shape(model.init, jax.random.key(0),
                         jnp.zeros((1, image_size, image_size, 3)),
                         jnp.zeros((1, model.text_encoder.context_length), jnp.int32))["params"]
  shardings = nn.unbox(parallel.logical_shardings(boxed, mesh))
  return model, jax.device_put(params, shardings), tokenizer, image_size
