"""Tasks, datasets and evaluators looked up by name: a task from outside mmjax trains through
train.py with its own evaluator on a schedule; unknown names and bad evaluator settings are clear
errors before any data is prepared; evaluators through the grain loader against references."""
import dataclasses
import json

import flax.linen as nn
import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train
from configs import common, digits_dcca, shapes_clip
from mmjax import parallel, tasks
from mmjax.data import datasets
from mmjax.evaluate import context, embed, evaluators
from mmjax.tasks import fusion as fusion_task
from mmjax.train import checkpoint
from tests import vse_task_config


def _rows(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_external_task_and_evaluator_train_through_train_py(tfds_dir, tmp_path):
  config = vse_task_config.get_config()
  config.dataset.data_dir = str(tfds_dir)
  results = train.train_and_evaluate(config, tmp_path)
  evals = [r for r in _rows(tmp_path / "metrics.jsonl") if "test/pair_cosine" in r]
  assert [r["step"] for r in evals] == [3, 6]              # every 3 steps, the last one once
  assert all("test_unseen/zero_shot_top1" in r for r in evals)
  assert evals[-1]["test/pair_cosine"] == results["test/pair_cosine"]
  # the evaluator's value against the model applied directly to the test split
  task = tasks.get(config.task)
  model = task.build_model(config)
  mngr = checkpoint.manager(tmp_path, keep=2, every=1)
  params = mngr.restore(6, args=checkpoint.ocp.args.Composite(
      state=checkpoint.ocp.args.StandardRestore()))["state"]["params"]
  dataset = datasets.get(config.dataset.name)
  builder = dataset.builder()(data_dir=str(tfds_dir), **dict(config.dataset.builder_kwargs))
  source = builder.as_data_source(split="test")
  transform = task.transform(config, dataset, train=False, tokenizer=task.tokenizer(config))
  rows = [embed.apply_transform(transform, source[i]) for i in range(len(source))]
  out = model.apply({"params": params}, np.stack([r["image"] for r in rows]),
                    np.stack([r["tokens"] for r in rows]))
  expected = np.mean(np.sum(np.asarray(out.image, np.float64) * np.asarray(out.text), axis=1))
  assert results["test/pair_cosine"] == pytest.approx(expected, abs=1e-5)


def _check_config(tmp_path, config, match):
  config.dataset.data_dir = str(tmp_path / "never_prepared")
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "never_prepared").exists()


def test_unknown_names_and_bad_evaluators_fail_before_any_data(tmp_path):
  builtins = r"\('clip', 'siglip', 'dcca', 'dccae', 'bimodal_ae', 'fusion'\)|\['bimodal_ae'"
  config = shapes_clip.get_config("tiny")
  config.task = "clipp"
  _check_config(tmp_path, config, rf"unknown task 'clipp'; expected one of .*({builtins})")
  config.task = "tests.no_such_module"
  _check_config(tmp_path, config, r"task 'tests.no_such_module': no module .* can be imported")
  config.task = "tests.vse_task_config"
  _check_config(tmp_path, config, r"has no TASK of type Task")
  config = shapes_clip.get_config("tiny")
  config.dataset.name = "shapez"
  _check_config(tmp_path, config, r"unknown dataset 'shapez'; expected one of \['digits', "
                                  r"'image_text', 'sequences', 'shapes', 'webdataset'\]")
  config = shapes_clip.get_config("tiny")
  config.evals.zero_shot.type = "zero_shoot"
  _check_config(tmp_path, config, r"unknown evaluator type 'zero_shoot'; expected one of "
                                  r"\['accuracy', 'arithmetic'")
  config = shapes_clip.get_config("tiny")
  config.evals.zero_shot.split = "test"
  _check_config(tmp_path, config, r"config.evals.zero_shot: zero_shot takes no setting \['split'\]"
                                  r"; it takes \['splits', 'templates'\]")
  config = shapes_clip.get_config("tiny")
  config.evals.zero_shot.every = -5
  _check_config(tmp_path, config, r"config.evals.zero_shot.every must be an int >= 0")
  config = digits_dcca.get_config("tiny")
  config.evals = {"zero_shot": {"type": "zero_shot"}}
  _check_config(tmp_path, config, r"zero_shot needs the task outputs \['image', 'text'\], and the "
                                  r"task has \['view1', 'view2'\]")
  with pytest.raises(ValueError, match=r"unknown fusion type 'latee'"):
    fusion_task.fusion_module({"type": "latee"})
  with pytest.raises(ValueError, match=r"config.model.fusion .*'rank'"):
    fusion_task.fusion_module({"type": "lowrank", "out_dim": 8})
  with pytest.raises(ValueError, match=r"unknown config variant 'tiyn'"):
    shapes_clip.get_config("tiyn")


class IdentityTowers(nn.Module):
  """Images are already (B, C) class vectors, token 0 is the class id: both towers the identity."""
  num_classes: int

  def setup(self):
    self.unused = self.param("unused", nn.initializers.zeros, ())

  def encode_image(self, images):
    return images / jnp.linalg.norm(images, axis=-1, keepdims=True)

  def encode_text(self, tokens):
    return jax.nn.one_hot(tokens[:, 0], self.num_classes) + 0.0 * self.unused


@dataclasses.dataclass
class _Rows(grain.MapTransform):
  def map(self, element):
    return {k: np.asarray(v) for k, v in element.items()}


class _Builder:
  def __init__(self, splits):
    self.splits = splits

  def as_data_source(self, split):
    return self.splits[split]


def _toy_context(names, images, labels, batch_size=16):
  """A clip-task Context over in-memory splits of (B, C) 'images' with identity towers."""
  tokenizer = lambda texts: np.array(  # noqa: E731
      [[next(i for i, n in enumerate(names) if n in t), len(t)] for t in texts], np.int32)
  examples = [{"image": x, "tokens": np.array([y, 0], np.int32), "label": y}
              for x, y in zip(images, labels)]
  dataset = datasets.Dataset("toy", builder=lambda: None,
                             transform=lambda train, tokenizer, **_: _Rows(),
                             class_names=tuple(names), templates=("a {}.", "a photo of a {}.", "{}"))
  task = dataclasses.replace(tasks.get("clip"), build_model=lambda c: IdentityTowers(len(names)))
  config = common.base("clip", eval_batch_size=batch_size)
  config.dataset = common.dataset("toy", eval_splits=("toy",))
  ctx = context.Context(task, task.build_model(config), parallel.make_mesh(4, 2, 1), dataset,
                        _Builder({"toy": examples, "train": examples}), config,
                        tokenizer=tokenizer, quiet=True, full=True)
  ctx.set_params({"unused": jnp.zeros(())})
  return ctx


def test_zero_shot_evaluator_with_identity_towers_is_exact():
  c, names = 5, ["ant", "bee", "cat", "dog", "eel"]
  rng = np.random.default_rng(0)
  labels = rng.integers(0, c, size=37)
  images = np.eye(c, dtype=np.float32)[labels] + 0.3 * rng.random((37, c), np.float32)
  ctx = _toy_context(names, images, labels)
  out = evaluators.run(evaluators.from_config(ctx.config, ctx.task, ctx.dataset), ctx)
  m = out["metrics"]
  assert m["toy/zero_shot_top1"] == 1.0 and m["toy/zero_shot_mean_per_class"] == 1.0
  assert np.trace(out["confusion_matrix"]["toy"]) == 37
  # retrieval against numpy: caption j is one-hot of its class, so its own image's rank is the
  # number of other images scoring at least as high on that class
  img = images / np.linalg.norm(images, axis=1, keepdims=True)
  own = img[np.arange(37), labels]
  t2i = np.array([np.sum(np.delete(img[:, y], j) >= own[j]) for j, y in enumerate(labels)])
  assert m["toy/t2i_recall@1"] == pytest.approx(np.mean(t2i < 1))
  assert m["toy/t2i_mean_rank"] == pytest.approx(np.mean(t2i + 1))


def test_embed_source_pads_keeps_record_order_and_limit(mesh8):
  del mesh8
  mesh = parallel.make_mesh(4, 2, 1)
  x = np.random.default_rng(0).normal(size=(45, 3)).astype(np.float32)
  source = [{"x": x[i], "label": np.int32(i)} for i in range(45)]
  fn = jax.jit(lambda v, b: {"y": b["x"] * v["w"]})
  for limit, batch in ((None, 13), (20, 8), (45, 500)):
    out = embed.embed_source(fn, {"w": 2.0}, source, _Rows(), mesh, batch, limit=limit,
                             quiet=True)
    n = 45 if limit is None else limit
    np.testing.assert_allclose(out["y"], 2 * x[:n])
    np.testing.assert_array_equal(out["label"], np.arange(n))
  assert embed.global_batch_size(mesh, 13) == 16 and embed.global_batch_size(mesh, 500, 20) == 24
