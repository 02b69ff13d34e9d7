"""The sequences task (mmjax.tasks.sequences) through train.py on 8 simulated devices: every model
of configs/sequences.py trains, resumes and evaluates; the missing-stream and interaction
evaluators (mmjax.evaluate.interactions) against what must hold."""
import json

import jax
import numpy as np
import pytest

import train
from configs import sequences as seq_configs
from mmjax import parallel, tasks
from mmjax.data import datasets
from mmjax.data import sequences as seq_data
from mmjax.errors import UserError
from mmjax.evaluate import context, evaluators


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("sequences_data"))


def _config(variant: str, data_dir: str, **overrides):
  c = seq_configs.get_config(f"{variant},tiny")
  c.dataset.data_dir = data_dir
  c.update(overrides)
  return c


def _rows(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# every model class once (unimodal_video / _words, early without alignment or with OT, and LMF
# differ from these only in settings, which test_sequence_models covers); MulT over two streams,
# where it compiles in a third of the time (test_sequence_models runs it on three); MTAG with the
# configured head count (the tiny variant sets two)
TRAINED = {"unimodal_audio": {}, "late": {}, "early_dtw": {}, "tfn": {},
           "mult": {"streams": ("audio", "words")},
           "mtag": {"num_heads": seq_configs.MODELS["mtag"]["num_heads"]}}


def test_every_model_trains_through_train_py(data_dir, tmp_path):
  for variant, model in TRAINED.items():
    workdir = tmp_path / variant
    c = _config(variant, data_dir, total_steps=2, checkpoint_every=2, log_every=1, evals={})
    c.model.update(model)
    train.train_and_evaluate(c, workdir)
    rows = _rows(workdir)
    assert [r["step"] for r in rows] == [1, 2], variant
    assert all(np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 for r in rows), (variant, rows)
    assert (workdir / "checkpoints" / "2").is_dir(), variant


def test_aligned_variant_resumes_and_evaluates_every_stream_absent(data_dir, tmp_path):
  c = _config("late,aligned,dropout", data_dir, total_steps=2, checkpoint_every=1)
  train.train_and_evaluate(c, tmp_path)
  c.total_steps = 3                                   # resumes from step 2
  results = train.train_and_evaluate(c, tmp_path)
  assert [r["step"] for r in _rows(tmp_path)][-1] == 3
  for stream in ("audio", "video", "words"):
    for suffix in ("", "_zeros"):
      assert 0 <= results[f"test/accuracy_without_{stream}{suffix}"] <= 1
  # late fusion is additive over words | audio + video: EMAP projects it onto itself
  assert results["test/emap_accuracy"] == results["test/emap_model_accuracy"]
  assert results["test/emap_model_accuracy"] == results["test/accuracy"]
  assert {"test/contribution_without_words", "test/contribution_mismatched_audio+video_drop"} <= set(
      results)
  c.evals = {"interactions": dict(type="interactions", every=0, groups=(("words",), ("smell",)))}
  with pytest.raises(UserError, match="must each name streams of the model inputs"):
    train.train_and_evaluate(c, tmp_path)             # at step 3 already: evaluates only


def test_bad_model_settings_name_the_value(data_dir):
  task = tasks.get("sequences")
  for override, message in ((dict(type="rnn"), "unknown config.model.type 'rnn'"),
                            (dict(streams=("audio", "smell")), "config.model.streams"),
                            (dict(type="unimodal", streams=("audio", "words")), "reads one"),
                            (dict(positions="clock"), "config.model.positions='clock'"),
                            (dict(positions="time", time_scale=0), "time_scale > 0")):
    c = _config("mult", data_dir)
    c.model.update(override)
    with pytest.raises(UserError, match=message):
      task.build_model(c)
  with pytest.raises(ValueError, match="unknown config variant 'mtga'"):
    seq_configs.get_config("mtga")


class _Splits:
  """A prepared builder's stand-in: in-memory splits."""

  def __init__(self, splits):
    self.splits = splits

  def as_data_source(self, split):
    return self.splits[split]


def test_missing_streams_equals_the_model_applied_with_the_stream_absent():
  # the reference: the model on the stacked eval inputs, one stream marked absent or zeroed
  config = seq_configs.get_config("late,tiny")
  config.evals = {"missing_streams": dict(type="missing_streams", every=0, how=("mask", "zeros"))}
  task, dataset = tasks.get("sequences"), datasets.get("sequences")
  rows = [seq_data.make_example(seq_data.SequencesConfig(name="t"), "test", i) for i in range(48)]
  model = task.build_model(config)
  params = jax.jit(task.init_fn(model, config))(jax.random.key(3))["params"]
  ctx = context.Context(task, model, parallel.make_mesh(8), dataset, _Splits({"test": rows}),
                        config, quiet=True)
  ctx.set_params(params)
  got = evaluators.run(evaluators.from_config(config, task, dataset), ctx)["metrics"]
  make = seq_data.transform(train=False)
  inputs = [make.random_map(r, np.random.default_rng(0)) for r in rows]
  batch = {k: np.stack([x[k] for x in inputs]) for k in inputs[0]}
  full = np.mean(np.argmax(np.asarray(model.apply({"params": params}, batch)), -1)
                 == batch["label"])
  wants = []
  for stream in ("audio", "video", "words"):
    for suffix, change in (("", {f"{stream}_present": np.zeros(48, bool)}),
                           ("_zeros", {stream: np.zeros_like(batch[stream])})):
      logits = model.apply({"params": params}, {**batch, **change})
      want = np.mean(np.argmax(np.asarray(logits), -1) == batch["label"])   # float64
      assert got[f"test/accuracy_without_{stream}{suffix}"] == pytest.approx(want, abs=1e-9), (
          stream, suffix)
      wants.append(want)
  assert any(w != full for w in wants), (full, wants)   # the absent streams change predictions
