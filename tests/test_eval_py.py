"""eval.py on a checkpoint of a 20-step train.py run: metrics.json, plots and report; agreement with
train.py's own end-of-training numbers; a TFDS dataset from its directory; imported CLIP weights;
clear errors for a checkpoint that does not match the config, a missing step and a missing BPE."""
import gzip
import json

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eval as eval_py
import train
from configs import shapes_clip
from mmjax.convert import clip as convert_clip
from mmjax.data import shapes
from mmjax.errors import UserError
from mmjax.evaluate import zero_shot


def _config(data_dir, **overrides):
  config = shapes_clip.get_config("tiny")
  config.dataset.data_dir = str(data_dir)
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tfds_dir):
  """(config, workdir, train.py's results) of a 20-step run with checkpoints at 10 and 20, and
  zero-shot evaluated at both."""
  data_dir = tfds_dir
  workdir = tmp_path_factory.mktemp("run")
  config = _config(data_dir, total_steps=20, checkpoint_every=10, log_every=5,
                   **{"evals.zero_shot.every": 10})
  results = train.train_and_evaluate(config, workdir)
  return config, workdir, results


@pytest.fixture(scope="module")
def evaluated(trained, monkeypatch_module):
  """eval.py on the run, plus zero-shot on the shapes test split read as a plain TFDS directory
  (with the shapes prompts, so it must agree with the shapes path exactly)."""
  config, workdir, _ = trained
  from mmjax.data import datasets, pipeline  # pylint: disable=import-outside-toplevel
  builder = pipeline.prepare(datasets.get("shapes").builder(), config.dataset.data_dir,
                             **dict(config.dataset.builder_kwargs))
  monkeypatch_module.setattr(zero_shot, "GENERIC_TEMPLATES", shapes.TEMPLATES)
  return eval_py.evaluate_workdir(config, workdir, tfds_datasets=[f"{builder.data_dir}:test"],
                                  quiet=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as mp:
    yield mp


def test_eval_writes_metrics_plots_and_report(trained, evaluated):
  _, workdir, _ = trained
  written = json.loads((workdir / "metrics.json").read_text())
  assert written["source"]["step"] == 20 and written["source"]["task"] == "clip"
  m = written["metrics"]
  for split in ("test", "test_unseen"):
    for key in ("zero_shot_top1", "zero_shot_top5", "zero_shot_mean_per_class", "i2t_recall@1",
                "i2t_recall@10", "t2i_recall@5", "i2t_median_rank", "t2i_mean_rank"):
      assert f"{split}/{key}" in m, key
  for key in ("probe/top1", "probe/5_shot_top1", "transfer/image_to_text",
              "transfer/text_to_image", "arithmetic/colour_hit", "arithmetic/shape_hit"):
    assert 0.0 <= m[key] <= 1.0, key
  assert len(written["confusion_matrix"]["test"]) == 48
  assert np.sum(written["confusion_matrix"]["test"]) == 48        # num_test examples
  assert set(written["per_class_accuracy"]["test"]) == set(shapes.SEEN)
  for name in ("similarity_test.png", "retrieval_test.png", "confusion_test.png",
               "confusion_test_unseen.png", "training_curves.png", "eval_curves.png", "report.md",
               "metrics.json"):
    assert name in evaluated["files"]
    path = workdir / name
    assert path.stat().st_size > 1000, name
    if name.endswith(".png"):
      assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  report = (workdir / "report.md").read_text()
  assert "![retrieval_test.png](retrieval_test.png)" in report
  assert "| test/zero_shot_top1 |" in report


def test_eval_agrees_with_train_and_with_the_tfds_path(trained, evaluated):
  _, _, train_results = trained
  m = evaluated["metrics"]
  for key, value in train_results.items():   # same step, same images, same classifier
    assert m[key] == pytest.approx(value, abs=1e-6), key
  assert m["mmjax_shapes_test/zero_shot_top1"] == pytest.approx(m["test/zero_shot_top1"])
  assert m["mmjax_shapes_test/zero_shot_top5"] == pytest.approx(m["test/zero_shot_top5"])


def test_checkpoint_that_does_not_match_the_config_is_a_clear_error(trained):
  config, workdir, _ = trained
  wrong = _config(config.dataset.data_dir, **{"model.image.channels": (8, 24)})
  with pytest.raises(UserError, match=r"step 20\) does not match the config.*image_encoder.*"
                                      r"model.image.channels: checkpoint \(8, 16\), config \(8, 24\)"):
    eval_py.evaluate_workdir(wrong, workdir, quiet=True)
  with pytest.raises(UserError, match=r"--checkpoint 15: .* has steps \[10, 20\]"):
    eval_py.evaluate_workdir(config, workdir, checkpoint=15, quiet=True)
  with pytest.raises(UserError, match="no checkpoints in"):
    eval_py.evaluate_workdir(config, workdir / "nothing_here", quiet=True)


def _tiny_clip_weights(path):
  """OpenAI-layout CLIP weights of a tiny random model (vocabulary of a 2-merge BPE)."""
  arch = dict(embed_dim=16, image_size=64,
              image=dict(patch_size=16, width=64, depth=1, num_heads=1, mlp_dim=64,
                         act="quick_gelu"),
              text=dict(vocab_size=516, context_length=32, width=64, depth=1, num_heads=1,
                        mlp_dim=64, act="quick_gelu", eot_token_id=None))
  model = convert_clip.build_model(arch)
  shapes_ = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                           jnp.zeros((1, 32), jnp.int32))["params"]
  rng = np.random.default_rng(0)   # random weights without compiling init
  params = jax.tree.map(lambda x: (0.1 * rng.normal(size=x.shape)).astype(np.float32),
                        flax.linen.unbox(shapes_))
  return convert_clip.save_clip(params, model, path, image_size=64, fmt="openai")


def test_imported_weights_and_a_missing_vocabulary(trained, tmp_path, monkeypatch):
  config, _, _ = trained
  weights = _tiny_clip_weights(tmp_path / "clip.safetensors")
  monkeypatch.setenv("MMJAX_BPE_VOCAB", str(tmp_path / "absent.txt.gz"))
  with pytest.raises(UserError, match=r"--weights .*BPE tokenizer.*absent\.txt\.gz"):
    eval_py.evaluate_workdir(config, tmp_path / "out", weights=str(weights), quiet=True)
  vocab = tmp_path / "bpe.txt.gz"
  with gzip.open(vocab, "wt") as f:
    f.write("#version: test\nr e</w>\nc i\n")
  monkeypatch.setenv("MMJAX_BPE_VOCAB", str(vocab))
  config = _config(config.dataset.data_dir, **{"eval_batch_size": 64})
  config.dataset.eval_splits = ("test_unseen",)
  config.evals.probe.examples = config.evals.transfer.examples = 0   # no probe, no transfer
  out = eval_py.evaluate_workdir(config, tmp_path / "out", weights=str(weights), quiet=True)
  assert out["source"]["weights"] == str(weights.resolve())
  assert 0.0 <= out["metrics"]["test_unseen/zero_shot_top1"] <= 1.0
  assert "arithmetic/hit" in out["metrics"] and "probe/top1" not in out["metrics"]
  assert (tmp_path / "out" / "metrics.json").exists()
