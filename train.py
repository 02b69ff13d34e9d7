"""Trains a model from an ml_collections config file on a device mesh.

    python train.py --config configs/shapes_clip.py --workdir /tmp/shapes_clip
    python train.py --config configs/shapes_clip.py --workdir DIR --config.batch_size=512

The task (config.task) and dataset (config.dataset.name) are looked up by name (mmjax.tasks,
mmjax.data.datasets); the evaluators of config.evals run on their schedule and after the last step,
their metrics written to metrics.jsonl and TensorBoard at that step (mmjax.evaluate.evaluators).
A workdir that already holds checkpoints resumes from the latest one (state and data position).
SIGTERM saves a checkpoint and exits cleanly. Multi-host: every process runs the same command;
jax.distributed is initialised from the environment on TPU pods and SLURM, or from
--coordinator_address / --num_processes / --process_id.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import threading
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from mmjax import parallel, tasks
from mmjax.data import datasets, pipeline
from mmjax.evaluate import context, evaluators
from mmjax.train import checkpoint, state as state_lib, step as step_lib
from mmjax.train.metrics import MetricWriter

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes_clip.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints and metrics go")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index")


class NonFiniteLoss(RuntimeError):
  pass


def train_and_evaluate(config, workdir) -> dict:
  """Runs training to config.total_steps (resuming from workdir) with the config's evaluators on
  their schedule; returns the metrics of the evaluation after the last step."""
  workdir = _check_workdir(workdir)
  is_main = jax.process_index() == 0

  # --- task, dataset, evaluators: looked up and checked before any work --------------------------
  task = tasks.get(config.task)
  dataset = datasets.get(config.dataset.name)
  evals = evaluators.from_config(config, task, dataset)
  model = task.build_model(config)

  # --- mesh --------------------------------------------------------------------------------------
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)

  # --- data --------------------------------------------------------------------------------------
  builder = pipeline.prepare(dataset.builder(), config.dataset.data_dir,
                             **dict(config.dataset.get("builder_kwargs", {})))
  tokenizer = task.tokenizer(config)
  train_source = builder.as_data_source(split=config.dataset.train_split)
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

  # --- checkpoint: resume if the workdir has one ---------------------------------------------------
  mngr = checkpoint.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every)
  restored = checkpoint.restore(mngr, checkpoint.abstract_with_shardings(state, state_shardings))
  if restored is not None:
    state, data_state = restored
    batches.set_state(data_state)
    if is_main:
      print(f"resumed from {workdir / 'checkpoints'} at step {int(state.step)}", flush=True)
  stop = _on_sigterm()

  # --- evals: on the training mesh, reading the eval splits through grain --------------------------
  ctx = context.Context(task, model, mesh, dataset, builder, config, tokenizer=tokenizer,
                        quiet=True, sources={config.dataset.train_split: train_source})
  writer = MetricWriter(workdir, enabled=is_main)

  def evaluate(step, due, params):
    ctx.set_params(params)
    results = evaluators.run(due, ctx)["metrics"]
    writer.write(step, results)
    return results

  # --- loop --------------------------------------------------------------------------------------
  first = int(state.step)
  pending = []  # (step, metrics on device) since the last check
  progress = tqdm(total=config.total_steps, initial=first, disable=not is_main, unit="step",
                  dynamic_ncols=True)
  start, images, eval_seconds = time.perf_counter(), 0, 0.0
  for step in range(first + 1, config.total_steps + 1):
    state, metrics = train_step(state, next(batches))
    pending.append((step, metrics))
    images += config.batch_size
    stopping = stop.is_set()   # read once: a SIGTERM between two reads would skip the save
    due_save = step % config.checkpoint_every == 0 or step == config.total_steps or stopping
    if step % config.log_every == 0 or due_save:
      values = _check_finite(pending, mngr)
      pending = []
      rate = images / (time.perf_counter() - start - eval_seconds)
      values.update(images_per_sec=rate, lr=float(state_lib.schedule(config)(step)))
      writer.write(step, values)
      progress.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{rate:.0f}")
    if due_save:
      checkpoint.save(mngr, step, state, batches.get_state(), config, force=True)
    progress.update(1)
    if stopping:
      mngr.wait_until_finished()
      progress.close()
      print(f"SIGTERM: saved step {step} to {workdir / 'checkpoints'}; exiting", flush=True)
      return {"stopped_at": step}
    due = [e for e in evals if e.due(step, config.total_steps) and step < config.total_steps]
    if due:
      began = time.perf_counter()
      evaluate(step, due, state.params)
      eval_seconds += time.perf_counter() - began
  progress.close()
  mngr.wait_until_finished()

  # --- evals after the last step -------------------------------------------------------------------
  results = {}
  due = [e for e in evals if e.due(config.total_steps, config.total_steps)]
  if due:
    results = evaluate(config.total_steps, due, state.params)
    if is_main:
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


def _check_workdir(workdir) -> pathlib.Path:
  if not workdir:
    raise ValueError("--workdir is required: where checkpoints and metrics go")
  path = pathlib.Path(workdir).expanduser().resolve()
  if path.exists() and not path.is_dir():
    raise ValueError(f"--workdir {path} exists and is not a directory")
  path.mkdir(parents=True, exist_ok=True)
  return path


def _check_finite(pending, mngr) -> dict:
  """Host values of the last step's metrics; NonFiniteLoss naming the first step with a non-finite
  loss (its state is never saved, so the last good checkpoint stays the latest)."""
  for step, metrics in pending:
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
      mngr.wait_until_finished()
      raise NonFiniteLoss(f"non-finite loss {loss} at step {step}; stopping. The last good "
                          f"checkpoint is step {mngr.latest_step()} in {mngr.directory}")
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
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only hosts (tests)
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif any(k in os.environ for k in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES")):
    jax.distributed.initialize()
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except NonFiniteLoss as e:
    print(e, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
