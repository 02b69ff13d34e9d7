"""Evaluates a train.py checkpoint, or imported CLIP weights, and writes a report to the workdir.

    python eval.py --config configs/shapes_clip.py --workdir /tmp/shapes_clip
    python eval.py --config configs/shapes_clip.py --workdir /tmp/shapes_clip --checkpoint 250
    python eval.py --config configs/digits_dcca.py --workdir /tmp/clip_b16 \
        --weights ViT-B-16.safetensors --tfds cifar10:test --tfds /data/my_dataset/1.0.0

Runs every evaluator the config names (config.evals, whatever its schedule; without it the task's
defaults: mmjax.evaluate.evaluators), with per-class accuracy, confusion matrices and plots.
Without --checkpoint the latest step is used. --weights (an OpenAI / OpenCLIP / Hugging Face CLIP
checkpoint) replaces the workdir's checkpoint; the config then only names the dataset (and its
evaluators, when it is a config of the same two-tower task). --tfds adds
zero-shot classification on a TFDS image classification dataset prepared locally (a name under
--tfds_data_dir, or a prepared dataset's directory), with split after ':' (default 'test').

Writes metrics.json (metrics, per-class accuracy, confusion matrices, where the model came from),
PNG plots (image-caption similarities, retrieval examples, confusion matrices, training curves,
the evaluations logged during training)
and report.md, which shows them all.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from mmjax import errors, parallel, paths, tasks
from mmjax.data import datasets, pipeline
from mmjax.evaluate import builtin, context, embed, evaluators, load, report, zero_shot


def evaluate_workdir(config, workdir, checkpoint: int | None = None, weights: str | None = None,
                     *, tfds_datasets=(), tfds_data_dir: str = "~/tensorflow_datasets",
                     quiet: bool = False) -> dict:
  """Runs the config's evaluators (or, for imported weights, a two-tower model's defaults) in full:
  writes metrics.json, the plots and report.md into workdir and returns what metrics.json holds."""
  if not workdir:
    raise errors.UserError("--workdir is required: the checkpoint is read and the report written "
                           "there")
  workdir = paths.resolve(workdir, "--workdir")
  dataset = datasets.get(config.dataset.name)

  # --- mesh --------------------------------------------------------------------------------------
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)

  # --- model: a checkpoint of this workdir, or imported weights ---------------------------------
  if weights:
    task = tasks.get(load.WEIGHTS_TASK)
    model, params, tokenizer, image_size = load.load_weights(
        weights, mesh, bpe_path=config.get("bpe_path") or None)
    config = ml_collections.ConfigDict(config.to_dict())
    config.dataset.image_size = image_size
    source = {"weights": str(pathlib.Path(weights).resolve())}
  else:
    task = tasks.get(config.task)
    model, params, step = load.restore_params(config, workdir, mesh, checkpoint)
    tokenizer = task.tokenizer(config)
    source = {"checkpoint": str(workdir / "checkpoints" / str(step)), "step": step}
  source.update(task=task.name, dataset=dataset.name)
  evals = evaluators.from_config(config, task, dataset, use_config=task.name == config.task)
  workdir.mkdir(parents=True, exist_ok=True)

  # --- data --------------------------------------------------------------------------------------
  builder = pipeline.prepare(dataset.builder(), config.dataset.data_dir,
                             **dict(config.dataset.get("builder_kwargs", {})))

  # --- evaluate: the plots and report go to a local folder, copied to a URI workdir at the end ------
  out_dir = _local_out_dir(workdir)
  ctx = context.Context(task, model, mesh, dataset, builder, config, tokenizer=tokenizer,
                        params=params, full=True, out_dir=out_dir, quiet=quiet)
  results = evaluators.run(evals, ctx)
  for spec in tfds_datasets:
    _merge(results, _tfds_zero_shot(ctx, spec, tfds_data_dir))

  # --- report ------------------------------------------------------------------------------------
  results = _write_report(out_dir, source, results)
  if out_dir != workdir:
    for f in out_dir.iterdir():
      if f.name != "metrics.jsonl":
        f.copy(workdir / f.name, overwrite=True)
    shutil.rmtree(out_dir)
  return results


def _local_out_dir(workdir):
  """workdir itself when local; for a URI (gs://), a local temporary folder with a copy of its
  metrics.jsonl: matplotlib and mmjax.evaluate.report write and read local files."""
  if paths.scheme(workdir) is None:
    return workdir
  out_dir = epath.Path(tempfile.mkdtemp(prefix="mmjax_eval_"))
  if (workdir / "metrics.jsonl").exists():
    (workdir / "metrics.jsonl").copy(out_dir / "metrics.jsonl")
  return out_dir


def _write_report(workdir, source: dict, results: dict) -> dict:
  """metrics.json, the training curves and report.md; the suite's plots are already written."""
  log = workdir / "metrics.jsonl"
  curves = [report.curves_plot(log, workdir / "training_curves.png"),
            report.eval_curves_plot(log, workdir / "eval_curves.png")]
  plots = [pathlib.Path(p) for p in results.pop("plots")] + [c for c in curves if c]
  arrays = []
  for split, matrix in results["confusion_matrix"].items():
    if len(matrix) > 100:   # e.g. 1000 classes: a .npy file rather than megabytes of JSON
      arrays.append(f"confusion_{split}.npy")
      with (workdir / arrays[-1]).open("wb") as f:
        np.save(f, np.asarray(matrix, np.int64))
      results["confusion_matrix"][split] = arrays[-1]
  results = {"source": source, **results, "files": [p.name for p in plots] + arrays}
  (workdir / "metrics.json").write_text(json.dumps(_json_safe(results), indent=1))
  results["files"] = ["metrics.json", *results["files"],
                      report.write_report(workdir, results, plots).name]
  return results


def _json_safe(value):
  """NaN (e.g. a metric with nothing to average) -> null, so metrics.json is strict JSON."""
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_json_safe(v) for v in value]
  return None if isinstance(value, float) and value != value else value


def _merge(results: dict, more: dict) -> None:
  for key, value in more.items():
    if isinstance(value, dict):
      results[key].update(value)
    else:
      results[key] += value


def _tfds_zero_shot(ctx, spec: str, data_dir: str) -> dict:
  """Zero-shot on a locally prepared TFDS image classification dataset (NAME or DIR[:SPLIT])."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  for name in ("image", "text"):
    ctx.outputs_fn((name,))            # a UserError naming the task's outputs if it has none
  where, _, split = spec.rpartition(":") if ":" in spec else (spec, "", "test")
  path = pathlib.Path(where).expanduser()
  if path.is_dir():
    builder = tfds.builder_from_directory(str(path))
  else:
    builder = tfds.builder(where, data_dir=str(pathlib.Path(data_dir).expanduser()))
    if not pathlib.Path(builder.data_dir).is_dir():
      raise errors.UserError(f"--tfds {spec}: {where} is not prepared under {data_dir} (looked "
                              f"for {builder.data_dir}); prepare it with `tfds build {where}`")
  image_key, label_key = builder.info.supervised_keys or ("image", "label")
  label = builder.info.features[label_key]
  if not isinstance(label, tfds.features.ClassLabel) or not label.names:
    raise errors.UserError(f"--tfds {spec}: feature {label_key!r} has no class names; zero-shot "
                           "needs a ClassLabel feature with names")
  if split not in builder.info.splits:
    raise errors.UserError(f"--tfds {spec}: no split {split!r}; it has "
                           f"{list(builder.info.splits)}")
  names = [n.replace("_", " ") for n in label.names]
  transform = embed.ImageTransform(ctx.image_size, image_key, label_key)
  fn = ctx.outputs_fn(("image",))
  if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:  # random access, grain
    out = embed.embed_source(fn, ctx.variables, builder.as_data_source(split=split), transform,
                             ctx.mesh, ctx.batch_size, desc=split, quiet=ctx.quiet)
    labels = out["label"]
  else:                                                             # tf.data, one process
    examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    batches = embed.split_batches(examples, transform, ctx.batch_size, keep=(label_key,))
    out, raw = embed.run(fn, ctx.variables, batches, ctx.mesh, ctx.batch_size, desc=split,
                         total=builder.info.splits[split].num_examples, quiet=ctx.quiet)
    labels = np.asarray(raw[label_key])
  results = builtin.empty()
  weights = builtin.class_weights(ctx, names, zero_shot.GENERIC_TEMPLATES)
  builtin.zero_shot_into(results, f"{builder.name}_{split}", out["image"], labels, weights, names,
                         full=True)
  builtin.plot_confusions(ctx, results, names, "zero-shot")
  return results


def _define_flags():
  """Command-line flags, defined only when run as a script (train.py defines the same names, and
  both modules are imported together by tests)."""
  config_flags.DEFINE_config_file("config", "configs/shapes_clip.py", "config file")
  flags.DEFINE_string("workdir", None, "train.py's workdir; the report is written there")
  flags.DEFINE_integer("checkpoint", None, "step to evaluate (default: the latest)")
  flags.DEFINE_string("weights", None, "imported CLIP weights instead of a checkpoint")
  flags.DEFINE_multi_string("tfds", [], "NAME_OR_DIR[:SPLIT]: extra zero-shot dataset")
  flags.DEFINE_string("tfds_data_dir", "~/tensorflow_datasets", "where --tfds looks")
  flags.DEFINE_bool("traceback", False, "show the traceback of a user error")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    config = errors.config_value(flags.FLAGS["config"])
    results = evaluate_workdir(config, f.workdir, f.checkpoint, f.weights, tfds_datasets=f.tfds,
                               tfds_data_dir=f.tfds_data_dir)
  except errors.UserError as e:
    errors.report("eval.py", e, f.traceback)
  if jax.process_index() == 0:
    for key, value in sorted(results["metrics"].items()):
      print(f"{key}: {value:.4f}", flush=True)
    print(f"wrote to {paths.resolve(f.workdir)}: "
          + ", ".join(results["files"]), flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=errors.flags_parser("eval.py"))
