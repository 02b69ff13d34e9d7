"""Training: each config's tiny variant on the 8-device mesh, sharded == single-device steps, exact
resume after a kill, SIGTERM saves and exits, torn checkpoints, restore onto another mesh, two
processes. (Non-finite states, bad configs, resume checks: test_failsafe.py.)"""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import eval as eval_py
import train
from configs import (cc3m_clip_b16, digits_bimodal_ae, digits_dcca, digits_dccae, laion_clip_b16,
                     shapes_clip, shapes_fusion, shapes_siglip)
from mmjax import parallel, tasks
from mmjax.train import checkpoint, state as state_lib, step as step_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_dir(tfds_dir):
  return tfds_dir


@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory):
  """A user folder of JPEGs + captions.csv (the image_text builder's input), one bad image."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from mmjax.data import shapes  # pylint: disable=import-outside-toplevel
  folder = tmp_path_factory.mktemp("pairs")
  config = shapes.ShapesConfig(name="t", num_train=96)
  rows = ["path,caption"]
  for i in range(96):
    example = shapes.render_example(config, "train", i)
    Image.fromarray(example["image"]).save(folder / f"{i}.jpg", quality=95)
    rows.append(f"{i}.jpg,\"{example['caption']}\"")
  (folder / "broken.jpg").write_bytes(b"not a jpeg")
  rows.append("broken.jpg,a broken image")
  (folder / "captions.csv").write_text("\n".join(rows))
  return folder


def _tiny(module, data_dir, **overrides):
  config = module.get_config("tiny")
  config.dataset.data_dir = str(data_dir)
  config.update_from_flattened_dict(overrides)
  return config


def _losses(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.parametrize("module", [shapes_clip, shapes_siglip, shapes_fusion, digits_dcca,
                                    digits_dccae, digits_bimodal_ae])
def test_tiny_configs_train_and_loss_decreases(module, data_dir, tmp_path):
  config = _tiny(module, data_dir, total_steps=12, log_every=2, checkpoint_every=6,
                 warmup_steps=1)
  results = train.train_and_evaluate(config, tmp_path)
  losses = _losses(tmp_path)
  assert len(losses) == 6 and all(np.isfinite(losses))
  assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
  assert results and all(np.isfinite(v) for v in results.values())
  assert (tmp_path / "checkpoints" / "12").is_dir() and (tmp_path / "tensorboard").is_dir()


@pytest.mark.parametrize("module", [cc3m_clip_b16, laion_clip_b16])
def test_real_data_configs_on_user_folder(module, caption_folder, data_dir, tmp_path):
  config = _tiny(module, data_dir, total_steps=12, log_every=2, checkpoint_every=6,
                 warmup_steps=1, tokenizer="byte")
  config.dataset.name = "image_text"  # the configs stream shards by default (tests/test_shards.py)
  config.dataset.builder_kwargs = {"source": str(caption_folder / "captions.csv"), "max_size": 64}
  if module is cc3m_clip_b16:  # with a validation split, retrieved and its pictures drawn
    config.dataset.builder_kwargs["validation_fraction"] = 0.25
    config.dataset.eval_splits = ("validation",)
    config.evals = {"retrieval": {"type": "retrieval", "every": 0}}
  train.train_and_evaluate(config, tmp_path)
  losses = _losses(tmp_path)
  assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
  if module is cc3m_clip_b16:  # the report's pictures decode images read as their JPEG bytes
    evaluated = eval_py.evaluate_workdir(config, tmp_path, quiet=True)
    assert "retrieval_validation.png" in evaluated["files"], evaluated["files"]
    assert evaluated["metrics"]["validation/i2t_recall@10"] > 0


def _state_after(config, mesh, batches):
  task = tasks.get(config.task)
  model = task.build_model(config)
  tx = state_lib.make_optimizer(config)
  create = lambda rng: state_lib.create_state(task.init_fn(model, config), tx, rng)  # noqa: E731
  state, shardings = parallel.init_sharded(create, mesh, jax.random.key(0))
  step = step_lib.make_train_step(task.make_loss_fn(model, config, mesh), tx, mesh, shardings)
  for batch in batches:
    state, _ = step(state, {k: jax.device_put(v, parallel.batch_sharding(mesh, v.ndim))
                            for k, v in batch.items()})
  return jax.tree.map(np.asarray, state.params)


@pytest.mark.parametrize("task", ["clip", "siglip"])
def test_sharded_step_equals_single_device_step(task, data_dir):
  config = _tiny(shapes_clip, data_dir, task=task)
  rng = np.random.default_rng(0)
  batches = [{"image": rng.normal(size=(32, 64, 64, 3)).astype(np.float32),
              "tokens": rng.integers(1, 259, size=(32, 32)).astype(np.int32),
              "label": np.zeros(32, np.int32)} for _ in range(3)]
  single = _state_after(config, parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1]), batches)
  sharded = _state_after(config, parallel.make_mesh(4, 2, 1), batches)
  for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def _run_cli(workdir, data_dir, *extra, env_extra=None, wait=True):
  cmd = [sys.executable, str(ROOT / "train.py"), "--config", f"{ROOT}/configs/shapes_clip.py:tiny",
         f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
         "--config.total_steps=9", "--config.checkpoint_every=3", "--config.log_every=3", *extra]
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", **(env_extra or {})}
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  if wait:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
  return proc


def _restore(workdir, step, config, mesh):
  """(state, data_state) of a checkpoint step, placed on `mesh` (any topology)."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  task = tasks.get(config.task)
  model = task.build_model(config)
  tx = state_lib.make_optimizer(config)
  create = lambda rng: state_lib.create_state(task.init_fn(model, config), tx, rng)  # noqa: E731
  abstract = jax.eval_shape(create, jax.random.key(0))
  shardings = parallel.logical_shardings(abstract, mesh)
  mngr = checkpoint.manager(workdir, keep=10, every=1)
  return checkpoint.restore(mngr, checkpoint.abstract_with_shardings(
      nn.unbox(abstract), nn.unbox(shardings)), step=step)[:2]


def _final_params(workdir, step, data_dir):
  mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  state, _ = _restore(workdir, step, _tiny(shapes_clip, data_dir), mesh)
  return jax.tree.map(np.asarray, state.params)


def test_killed_run_with_evals_resumes_to_the_same_params(data_dir, tmp_path):
  """A run evaluated every 3 steps, killed after its step-3 checkpoint and resumed, ends with the
  params of a run never evaluated nor interrupted: evaluation changes no training batch, and the
  resumed run re-evaluates from where it stopped (a zero-shot curve at steps 3, 6 and 9)."""
  config = _tiny(shapes_clip, data_dir, total_steps=9, checkpoint_every=3, log_every=3)
  config.evals = {}
  train.train_and_evaluate(config, tmp_path / "straight")
  every3 = ("--config.evals.zero_shot.every=3", "--config.evals.retrieval.every=3")
  proc = _run_cli(tmp_path / "killed", data_dir, *every3, wait=False)
  deadline = time.time() + 600
  while not (tmp_path / "killed" / "checkpoints" / "3").is_dir():  # a finished checkpoint
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / "killed" / "checkpoints" / "9").exists()
  config.evals = shapes_clip.get_config("tiny").evals       # the CLI's config, in this process
  config.evals.zero_shot.every = config.evals.retrieval.every = 3
  train.train_and_evaluate(config, tmp_path / "killed")
  for a, b in zip(jax.tree.leaves(_final_params(tmp_path / "killed", 9, data_dir)),
                  jax.tree.leaves(_final_params(tmp_path / "straight", 9, data_dir))):
    np.testing.assert_array_equal(a, b)
  rows = [json.loads(r) for r in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
  steps = sorted({r["step"] for r in rows if "test_unseen/zero_shot_top1" in r})
  assert steps[-2:] == [6, 9] and set(steps) <= {3, 6, 9}, steps


def test_sigterm_saves_the_current_step_exits_cleanly_and_resumes(data_dir, tmp_path, capsys):
  proc = _run_cli(tmp_path, data_dir, "--config.total_steps=100000",
                  "--config.checkpoint_every=100000", "--config.log_every=2", wait=False)
  deadline, metrics = time.time() + 600, tmp_path / "metrics.jsonl"
  while not (metrics.exists() and metrics.read_text().strip()):   # past compilation, training
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  match = re.search(r"SIGTERM: saved step (\d+) to ", out)
  assert match, out
  step = int(match.group(1))
  assert 2 <= step < 100000
  assert checkpoint.manager(tmp_path, keep=2, every=1).latest_step() == step
  mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  state, _ = _restore(tmp_path, step, _tiny(shapes_clip, data_dir), mesh)
  assert int(state.step) == step
  capsys.readouterr()
  train.train_and_evaluate(_tiny(shapes_clip, data_dir, total_steps=step + 2), tmp_path)
  out = capsys.readouterr().out
  assert f"at step {step}" in out and "resumed from" in out, out
  assert checkpoint.manager(tmp_path, keep=2, every=1).latest_step() == step + 2


def test_sigterm_handled_during_a_log_step_still_saves(data_dir, tmp_path, monkeypatch):
  """The signal arrives while step 2 logs (after the loop decided not to save step 2): the run
  must save the step it reports, never report a step it did not save."""
  config = _tiny(shapes_clip, data_dir, total_steps=50, checkpoint_every=50, log_every=2)
  config.dataset.eval_splits = ()
  check = train._check_finite

  def check_then_sigterm(pending, mngr, config):
    values = check(pending, mngr, config)
    os.kill(os.getpid(), signal.SIGTERM)   # handled by train.py's handler before the next line
    return values

  monkeypatch.setattr(train, "_check_finite", check_then_sigterm)
  previous = signal.getsignal(signal.SIGTERM)
  try:
    result = train.train_and_evaluate(config, tmp_path)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert result["stopped_at"] < 50
  assert checkpoint.manager(tmp_path, keep=2, every=1).latest_step() == result["stopped_at"]


def test_torn_checkpoint_is_ignored_and_restore_works_on_another_mesh(data_dir, tmp_path):
  config = _tiny(shapes_clip, data_dir, total_steps=6, checkpoint_every=3)
  config.dataset.eval_splits = ()
  train.train_and_evaluate(config, tmp_path)
  ckpts = tmp_path / "checkpoints"
  # a save killed half-way leaves orbax's temporary folder: it must never be restored
  torn = ckpts / "9.orbax-checkpoint-tmp-1234"
  torn.mkdir()
  (torn / "state").mkdir()
  (torn / "state" / "junk").write_bytes(b"\0" * 10)
  assert checkpoint.manager(tmp_path, keep=2, every=3).latest_step() == 6
  # restore onto a 4-device mesh with a different layout than the 8-device one that saved
  mesh = parallel.make_mesh(2, 2, 1, devices=jax.devices()[:4])
  state, data_state = _restore(tmp_path, None, config, mesh)
  assert int(state.step) == 6 and json.loads(data_state)
  leaf = state.params["text_encoder"]["encoder"]["block_0"]["mlp"]["fc1"]["kernel"]
  assert len(leaf.sharding.device_set) == 4
  saved = _final_params(tmp_path, 6, data_dir)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_two_processes_match_one_process(data_dir, tmp_path):
  """Training and the evaluation after it (each process embedding its share of every eval batch)
  give the single-process params and metrics."""
  port = 20000 + os.getpid() % 10000
  config = _tiny(shapes_clip, data_dir, total_steps=3, checkpoint_every=3, log_every=3)
  single = train.train_and_evaluate(config, tmp_path / "single")
  procs = [_run_cli(tmp_path / "multi", data_dir, "--config.total_steps=3",
                    "--config.checkpoint_every=3", f"--coordinator_address=localhost:{port}",
                    "--num_processes=2", f"--process_id={i}", env_extra={"JAX_NUM_CPU_DEVICES": "4"},
                    wait=False) for i in range(2)]
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
  for a, b in zip(jax.tree.leaves(_final_params(tmp_path / "multi", 3, data_dir)),
                  jax.tree.leaves(_final_params(tmp_path / "single", 3, data_dir))):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  multi = json.loads((tmp_path / "multi" / "results.json").read_text())
  assert set(multi) == set(single) and "test_unseen/zero_shot_top1" in multi
  for key, value in single.items():
    assert multi[key] == pytest.approx(value, abs=1e-5), key
