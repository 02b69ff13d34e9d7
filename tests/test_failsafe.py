"""Fail-safe runs (issue 15): the config is checked before any work; a mistake is a short message and
exit status 2; a resumed run checks that the checkpoint fits (model, data pipeline) or restarts the
data on request; only finite states are saved; metrics.jsonl has one row per step across resumes;
SIGTERM during an evaluation stops it and keeps the step. (Damaged checkpoints: test_checkpoint.py;
images and captions: test_image_text.py.)"""
import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import eval as eval_py
import train
from configs import shapes_clip
from mmjax.errors import UserError
from mmjax.train import checkpoint
from mmjax.train.metrics import MetricWriter

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tiny(data_dir, **overrides):
  config = shapes_clip.get_config("tiny")
  config.dataset.data_dir = str(data_dir)
  config.evals = {}
  config.update_from_flattened_dict(overrides)
  return config


def _rows(workdir):
  return [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]


def _cli(*args, workdir):
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8"}
  proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, f"--workdir={workdir}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  return proc.returncode, proc.stderr.strip()


def test_user_errors_on_the_command_line_are_one_line_and_exit_2(tmp_path):
  code, err = _cli("--config", f"{ROOT}/configs/shapes_clip.py:tiyn", workdir=tmp_path)
  assert code == 2 and len(err.splitlines()) == 1, err
  assert "unknown config variant 'tiyn'; expected one of ['tiny']" in err
  code, err = _cli("--config", f"{ROOT}/configs/shapes_clip.py:tiny", "--config.total_steps=0",
                   f"--config.dataset.data_dir={tmp_path / 'data'}", workdir=tmp_path / "run")
  assert code == 2 and err == ("train.py: error: 1 config problem(s): config.total_steps=0: "
                               "expected an int > 0"), err
  assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
  code, err = _cli("--config", f"{ROOT}/configs/shapes_clip.py:tiny", "--config.task=clpi",
                   "--traceback", workdir=tmp_path / "run")   # --traceback: where it was raised
  assert code == 2 and err.startswith("Traceback") and "in resolve" in err, err
  assert err.splitlines()[-1].startswith("train.py: error: unknown task 'clpi'; expected one of ")


@pytest.mark.parametrize("overrides, message", [
    ({"total_steps": -5}, r"config.total_steps=-5: expected an int > 0"),
    ({"checkpoint_every": 0, "batch_size": 0},
     r"config.batch_size=0: expected an int > 0 .*config.checkpoint_every=0: expected an int >= 1"),
    ({"batch_size": 30}, r"config.batch_size=30 does not split over the 8 batch devices of the "
                         r"mesh \(data x fsdp = 8 x 1\); use a multiple of 8, e.g. 24 or 32"),
    ({"lr": float("nan"), "mesh.data": 0}, r"config.lr=nan: expected a number >= 0; "
                                           r"config.mesh.data=0: expected an int -1"),
    ({"model.preset": "huge"}, r"unknown preset 'huge'; expected one of \['B/16'"),
])
def test_bad_configs_fail_before_any_data(tmp_path, overrides, message):
  config = _tiny(tmp_path / "data", **overrides)
  with pytest.raises(UserError, match=message):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "data").exists()


@pytest.fixture(scope="module")
def run6(tfds_dir, tmp_path_factory):
  """A tiny run to step 6 (checkpoints at 3 and 6, a row per step), copied by each test."""
  workdir = tmp_path_factory.mktemp("run6")
  train.train_and_evaluate(_tiny(tfds_dir, total_steps=6, log_every=1), workdir)
  return workdir


def _copy(run6, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  return pathlib.Path(shutil.copytree(run6, tmp_path / "run"))


def test_resuming_another_model_is_one_clear_error(run6, tfds_dir, tmp_path):
  workdir = _copy(run6, tmp_path)
  config = _tiny(tfds_dir, total_steps=9, **{"model.text.width": 48})
  with pytest.raises(UserError, match=r"checkpoint .*6 \(step 6\) does not match the config: \d+ "
                                      r"parameter\(s\) differ, e.g. .*text_encoder.*Config fields "
                                      r"that differ from the checkpoint's: model.text.width: "
                                      r"checkpoint 32, config 48\. Train with the config"):
    train.train_and_evaluate(config, workdir)


def test_resuming_another_data_pipeline_asks_for_restart_data(run6, tfds_dir, tmp_path, capsys):
  workdir = _copy(run6, tmp_path)
  config = _tiny(tfds_dir, total_steps=9, batch_size=16)
  with pytest.raises(UserError, match=r"holds the position of another input pipeline: sampler: .*"
                                      r"global_batch=32.*global_batch=16.*batch_size: checkpoint "
                                      r"32, config 16.*--restart_data"):
    train.train_and_evaluate(config, workdir)
  train.train_and_evaluate(config, workdir, restart_data=True)
  assert "at step 6 (input pipeline from the beginning)" in capsys.readouterr().out
  assert checkpoint.manager(workdir, keep=2, every=1).latest_step() == 9


def test_only_finite_states_are_saved(tfds_dir, tmp_path):
  """The learning rate warms up from 0 to 1e30: step 1 changes nothing, step 2's update blows the
  params up. Step 1 is the last good state; before, step 2 was saved (its loss, computed before its
  update, was finite) and called good, and resuming from it gave NaN again."""
  config = _tiny(tfds_dir, total_steps=6, checkpoint_every=1, log_every=1, lr=1e30,
                 warmup_steps=2, grad_clip=0.0)
  with pytest.raises(train.NonFiniteLoss, match=r"non-finite param_norm at step 2 \(loss .*, "
                                                r"param_norm inf\); stopping, this state is not "
                                                r"saved. The last good checkpoint is step 1"):
    train.train_and_evaluate(config, tmp_path)
  mngr = checkpoint.manager(tmp_path, keep=10, every=1)
  assert mngr.all_steps() == [1]
  params = mngr.restore(1, args=checkpoint.ocp.args.Composite(
      state=checkpoint.ocp.args.StandardRestore()))["state"]["params"]
  assert np.isfinite(float(optax.tree.norm(params)))
  with pytest.raises(train.NonFiniteLoss, match=r"non-finite .* at step 1 .*No checkpoint was "
                                                r"saved before it"):
    train.train_and_evaluate(_tiny(tfds_dir, lr=1e30, warmup_steps=0, grad_clip=0.0),
                             tmp_path / "fresh")


def test_metrics_have_one_row_per_step_across_resumes(run6, tfds_dir, tmp_path, capsys):
  workdir = _copy(run6, tmp_path)
  (workdir / "checkpoints" / "6").rename(workdir / "checkpoints" / "6.gone")   # killed before 6
  train.train_and_evaluate(_tiny(tfds_dir, total_steps=9, log_every=1), workdir)
  steps = [r["step"] for r in _rows(workdir)]
  assert steps == list(range(1, 10)), steps
  # past total_steps: the step the checkpoint holds is evaluated and logged under its own number
  config = _tiny(tfds_dir, total_steps=4)
  config.evals = shapes_clip.get_config("tiny").evals
  results = train.train_and_evaluate(config, workdir)
  assert "checkpoint is at step 9 and total_steps is 4: nothing to train" in capsys.readouterr().out
  rows = _rows(workdir)
  assert [r["step"] for r in rows] == list(range(1, 10))
  assert rows[-1]["test/zero_shot_top1"] == results["test/zero_shot_top1"] and "loss" in rows[-1]


def sigterm_evaluator(ctx, *, splits=None):
  """An evaluator that receives SIGTERM before it embeds anything (named by dotted path)."""
  os.kill(os.getpid(), signal.SIGTERM)
  ctx.embed(ctx.splits(splits)[0], ("image",))
  raise AssertionError("the evaluation went on after SIGTERM")


@pytest.mark.parametrize("every, stopped", [(4, 4), (0, 6)])   # mid-run; the final evaluation
def test_sigterm_during_an_evaluation_saves_the_step_and_stops(tfds_dir, tmp_path, every, stopped):
  config = _tiny(tfds_dir, total_steps=6, checkpoint_every=100, log_every=100)
  config.evals = {"sig": {"type": "tests.test_failsafe.sigterm_evaluator", "every": every}}
  previous = signal.getsignal(signal.SIGTERM)
  try:
    result = train.train_and_evaluate(config, tmp_path)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert result == {"stopped_at": stopped}
  assert checkpoint.manager(tmp_path, keep=2, every=1).latest_step() == stopped
  assert not (tmp_path / "results.json").exists()


def test_bad_weights_files_are_user_errors(tfds_dir, tmp_path):
  config = _tiny(tfds_dir)
  with pytest.raises(UserError, match=r"--weights .*absent.safetensors: no such file"):
    eval_py.evaluate_workdir(config, tmp_path, weights=str(tmp_path / "absent.safetensors"))
  (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
  with pytest.raises(UserError, match=r"--weights .*junk.safetensors: cannot be read as OpenAI"):
    eval_py.evaluate_workdir(config, tmp_path, weights=str(tmp_path / "junk.safetensors"))
  assert jax.devices()   # still usable after the errors


def test_a_metrics_line_cut_by_a_kill_is_dropped_and_appends_start_on_a_clean_line(tmp_path):
  writer = MetricWriter(tmp_path)
  writer.write(1, {"loss": 1.0})
  writer.write(2, {"loss": 0.5})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 3, "lo')                       # killed during the append of step 3
  writer = MetricWriter(tmp_path, resume_step=2)
  writer.write(3, {"loss": 0.25})
  writer.write(4, {"loss": 0.125})
  writer.close()
  assert _rows(tmp_path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5},
                             {"step": 3, "loss": 0.25}, {"step": 4, "loss": 0.125}]
