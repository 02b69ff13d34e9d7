"""Trains a model from an ml_collections config file on a device mesh.

    python train.py --config configs/shapes_clip.py --workdir /tmp/shapes_clip
    python train.py --config configs/shapes_clip.py --workdir DIR --config.batch_size=512

The task (config.task) and dataset (config.dataset.name) are looked up by name (mmjax.tasks,
mmjax.data.datasets); the evaluators of config.evals run on their schedule and after the last step,
their metrics written to metrics.jsonl and TensorBoard at that step (mmjax.evaluate.evaluators).
A workdir that already holds checkpoints resumes from the newest one that restores completely (a
damaged step is skipped, named and kept), after checking that it fits the config; --restart_data
keeps its weights but starts the input pipeline from the beginning. Only finite states are saved.
SIGTERM saves a checkpoint and exits cleanly. A mistake in the config, a path or a name prints a
short message and exits with status 2 (--traceback shows where it was raised). Multi-host: every process runs the same command;
jax.distributed is initialised from the environment on TPU pods and SLURM, or from
--coordinator_address / --num_processes / --process_id.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from mmjax import errors, parallel, paths, tasks
from mmjax.data import datasets, pipeline
from mmjax.evaluate import context, embed, evaluators
from mmjax.train import checkpoint, compat, state as state_lib, step as step_lib, validate
from mmjax.train.metrics import MetricWriter

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes_clip.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints and metrics go")
_RESTART_DATA = flags.DEFINE_bool(
    "restart_data", False, "resume the weights and optimizer of the latest checkpoint, but start "
    "the input pipeline from the beginning (after a change of batch size, data or process count)")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "show the traceback of a user error")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index")


class NonFiniteLoss(RuntimeError):
  """A step produced a non-finite loss, gradient or parameter norm; its state was not saved."""


def train_and_evaluate(config, workdir, *, restart_data: bool = False) -> dict:
  """Runs training to config.total_steps (resuming from workdir) with the config's evaluators on
  their schedule; returns the metrics of the evaluation after the last step."""
  # --- config, task, dataset, evaluators, model: checked before any work ---------------------------
  validate.check_config(config)
  workdir = _check_workdir(workdir)
  is_main = jax.process_index() == 0
  task = tasks.get(config.task)
  dataset = datasets.get(config.dataset.name)
  evals = evaluators.from_config(config, task, dataset)
  model = task.build_model(config)

  # --- mesh --------------------------------------------------------------------------------------
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  validate.check_batch(config.batch_size, mesh)

  # --- data --------------------------------------------------------------------------------------
  builder = pipeline.prepare(dataset.builder(), config.dataset.data_dir,
                             **dict(config.dataset.get("builder_kwargs", {})))
  tokenizer = task.tokenizer(config)
  train_source = dataset.source(builder, config.dataset.train_split)
  if config.dataset.get("cache", False):
    train_source = pipeline.InMemorySource(train_source, desc=f"caching {config.dataset.train_split}")
  transform = task.transform(config, dataset, train=True, tokenizer=tokenizer)
  loader = pipeline.make_loader(train_source, transform, global_batch_size=config.batch_size,
                                seed=config.seed, worker_count=config.get("worker_count", 0))
  batches = pipeline.BatchIterator(loader, mesh)

  # --- sharded state -----------------------------------------------------------------------------
  tx = state_lib.make_optimizer(config)
  create = lambda rng: state_lib.create_state(task.init_fn(model, config), tx, rng)  # noqa: E731
  state, state_shardings = parallel.init_sharded(create, mesh, jax.random.key(config.seed))

  # --- step --------------------------------------------------------------------------------------
  loss_fn = task.make_loss_fn(model, config, mesh)
  train_step = step_lib.make_train_step(loss_fn, tx, mesh, state_shardings)

  # --- checkpoint: resume from the newest step that fits the config and restores completely -------
  mngr = checkpoint.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every)
  abstract = checkpoint.abstract_with_shardings(state, state_shardings)
  check = compat.resume_check(mngr, abstract, config,
                              None if restart_data else batches.get_state())
  restored = checkpoint.restore(mngr, abstract, check=check, data=not restart_data)
  if restored is not None:
    state, data_state, _ = restored
    if data_state is not None:
      batches.set_state(data_state)
    if is_main:
      print(f"resumed from {workdir / 'checkpoints'} at step {int(state.step)}"
            + (" (input pipeline from the beginning)" if restart_data else ""), flush=True)
  stop = _on_sigterm()
  first = int(state.step)

  # --- evals: on the training mesh, reading the eval splits through grain --------------------------
  ctx = context.Context(task, model, mesh, dataset, builder, config, tokenizer=tokenizer,
                        quiet=True, sources={config.dataset.train_split: train_source},
                        should_stop=stop.is_set)
  writer = MetricWriter(workdir, enabled=is_main, resume_step=first)

  def evaluate(step, due, params):
    ctx.set_params(params)
    return evaluators.run(due, ctx)["metrics"]

  # --- loop --------------------------------------------------------------------------------------
  pending, results = [], {}   # (step, metrics on device) since the last check; the last evaluation
  progress = tqdm(total=config.total_steps, initial=first, disable=not is_main, unit="step",
                  dynamic_ncols=True)
  start, images, eval_seconds = time.perf_counter(), 0, 0.0
  for step in range(first + 1, config.total_steps + 1):
    state, metrics = train_step(state, next(batches))
    pending.append((step, metrics))
    images += config.batch_size
    row = {}                   # this step's line of metrics.jsonl: training and evaluation metrics
    stopping = stop.is_set()   # read once: a SIGTERM between two reads would skip the save
    due_save = step % config.checkpoint_every == 0 or step == config.total_steps or stopping
    if step % config.log_every == 0 or due_save:
      row = _check_finite(pending, mngr, config)
      pending = []
      rate = images / (time.perf_counter() - start - eval_seconds)
      row.update(images_per_sec=rate, lr=float(state_lib.schedule(config)(step)))
      progress.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{rate:.0f}")
    if due_save:
      checkpoint.save(mngr, step, state, batches.get_state(), config, force=True)
    progress.update(1)
    due = [] if stopping else [e for e in evals if e.due(step, config.total_steps)]
    if due:
      began = time.perf_counter()
      try:
        results = evaluate(step, due, state.params)
        row.update(results)
      except embed.Interrupted:  # SIGTERM during an evaluation: save this step (if not yet), stop
        stopping = True
        if not due_save:
          row.update(_check_finite(pending, mngr, config) if pending else {})
          pending = []
          checkpoint.save(mngr, step, state, batches.get_state(), config, force=True)
      eval_seconds += time.perf_counter() - began
    writer.write(step, row)
    if stopping:
      mngr.wait_until_finished()
      batches.close()
      progress.close()
      writer.close()
      print(f"SIGTERM: saved step {step} to {workdir / 'checkpoints'}; exiting", flush=True)
      return {"stopped_at": step}
  progress.close()
  batches.close()   # the grain worker processes, if any
  mngr.wait_until_finished()

  # --- a run already at (or past) total_steps: evaluate the step it holds ---------------------------
  if first >= config.total_steps:
    if is_main:
      print(f"the checkpoint is at step {first} and total_steps is {config.total_steps}: nothing "
            f"to train; evaluating step {first}", flush=True)
    due = [e for e in evals if e.every is not None]
    try:
      results = evaluate(first, due, state.params) if due else {}
    except embed.Interrupted:
      writer.close()
      return {"stopped_at": first}
    writer.write(first, results)

  # --- results -----------------------------------------------------------------------------------
  if results and is_main:
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    for group, values in _grouped(results).items():
      print(f"{group}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), flush=True)
  writer.close()
  return results


def _grouped(metrics: dict) -> dict[str, dict]:
  """{'test/zero_shot_top1': v, ...} -> {'test': {'zero_shot_top1': v, ...}, ...}: one printed
  line per split (or per evaluator for metrics named 'probe/...')."""
  groups = {}
  for key, value in metrics.items():
    group, _, name = key.rpartition("/")
    groups.setdefault(group or "metrics", {})[name] = value
  return groups


def _check_workdir(workdir):
  """The workdir as an epath.Path (a local path resolved, a gs:// URI kept), created; a UserError
  when it is missing, a file, on a scheme orbax cannot write checkpoints to, or not creatable."""
  if not workdir:
    raise errors.UserError("--workdir is required: where checkpoints and metrics go")
  path = paths.resolve(workdir, "--workdir")
  paths.check_checkpoint_dir(path)
  if path.exists() and not path.is_dir():
    raise errors.UserError(f"--workdir {path} exists and is not a directory")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except Exception as e:  # pylint: disable=broad-except  # OSError, or tf.io.gfile's errors
    raise errors.UserError(f"--workdir {path} cannot be created: "
                           f"{getattr(e, 'strerror', None) or errors.one_line(e)}") from e
  return path


FINITE = ("loss", "grad_norm", "param_norm")


def _check_finite(pending, mngr, config) -> dict:
  """Host values of the last step's metrics; NonFiniteLoss naming the first step whose loss,
  gradient norm or updated-parameter norm is not finite (that state is never saved, so the
  latest checkpoint is a finite state)."""
  for step, metrics in pending:
    values = {k: float(metrics[k]) for k in FINITE if k in metrics}
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    if bad:
      mngr.wait_until_finished()
      last = mngr.latest_step()
      where = (f"The last good checkpoint is step {last} in {mngr.directory}" if last is not None
               else "No checkpoint was saved before it")
      raise NonFiniteLoss(
          f"non-finite {', '.join(bad)} at step {step} "
          f"({', '.join(f'{k} {v:.4g}' for k, v in values.items())}); stopping, this state is not "
          f"saved. {where}. Lower config.lr (now {config.lr}) or set config.grad_clip.")
  return {k: float(v) for k, v in pending[-1][1].items()}


def _on_sigterm():
  event = threading.Event()
  try:
    signal.signal(signal.SIGTERM, lambda *_: event.set())
  except ValueError:  # not the main thread (e.g. inside a test runner thread)
    pass
  return event


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  try:
    config = errors.config_value(_CONFIG)
    if _COORDINATOR.value or _NUM_PROCESSES.value:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only hosts (tests)
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif any(k in os.environ for k in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES")):
      jax.distributed.initialize()
    train_and_evaluate(config, _WORKDIR.value, restart_data=_RESTART_DATA.value)
  except (errors.UserError, NonFiniteLoss) as e:
    errors.report("train.py", e, _TRACEBACK.value)


if __name__ == "__main__":
  app.run(main, flags_parser=errors.flags_parser("train.py"))
