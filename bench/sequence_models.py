"""Every model of configs/sequences.py trained on the unaligned and the aligned sequences: a table
of parameters, training time and test accuracy (all streams, each stream absent), EMAP.

    python bench/sequence_models.py [--models mult,mtag,...] [--data_dir DIR] [--out DIR]
                                    [--variants unaligned,aligned] [--set KEY=VALUE ...]
    python bench/sequence_models.py --step_ms [--models mult,mtag] [--set KEY=VALUE ...]

Each run is `python train.py --config configs/sequences.py:MODEL[,aligned] --workdir OUT/...` in
its own process (what a user runs); the table reads each run's results.json and metrics.jsonl.
Training time is total_steps x batch / the logged images per second (evaluation excluded). A
workdir that already holds a finished run is read, not retrained (delete it to rerun).
--set passes --config.KEY=VALUE to every run (e.g. --set total_steps=300 for a quick look), and
to every config --step_ms times (e.g. --set model.num_heads=4).
--step_ms trains nothing: it times train.py's jitted training step (loss, gradients, the config's
optimizer) of each model on one generated batch of the config's size, in this process, and prints
milliseconds per step (the median of 5 rounds of 5 steps, after compilation).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import sequences as seq_configs  # noqa: E402  pylint: disable=wrong-import-position


def load_config(variant: str, sets=()):
  """configs/sequences.py:variant with each KEY=VALUE of sets parsed as train.py parses
  --config.KEY=VALUE (ml_collections' config flag); a key the config lacks or a value of the wrong
  type raises its error, which names the key."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  argv = ["sequence_models", f"--config={ROOT}/configs/sequences.py:{variant}",
          *[f"--config.{s}" for s in sets]]
  flag_values = flags.FlagValues()
  config = config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return config.value


def parameters(variant: str, sets=()) -> int:
  """The parameter count of a config's model (shapes only, nothing computed)."""
  import jax  # pylint: disable=import-outside-toplevel
  from mmjax import tasks  # pylint: disable=import-outside-toplevel
  config = load_config(variant, sets)
  task = tasks.get(config.task)
  shapes = jax.eval_shape(task.init_fn(task.build_model(config), config), jax.random.key(0))
  return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def run(variant: str, out: pathlib.Path, data_dir: str, sets) -> dict:
  """Trains (unless out holds a finished run) and returns results.json + the training seconds."""
  workdir = out / variant.replace(",", "_")
  if not (workdir / "results.json").exists():
    cmd = [sys.executable, str(ROOT / "train.py"), f"--config={ROOT}/configs/sequences.py:"
           f"{variant}", f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
           *[f"--config.{s}" for s in sets]]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
  results = json.loads((workdir / "results.json").read_text())
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  last = [r for r in rows if "images_per_sec" in r][-1]
  results["train_s"] = last["step"] * seq_configs.get_config(variant).batch_size / last[
      "images_per_sec"]
  return results


def step_ms(variant: str, sets=(), rounds: int = 5, steps: int = 5) -> float:
  """Milliseconds per training step of a config's model on one generated unaligned batch: train.py's
  own step (mmjax.train.step.make_train_step with the config's optimizer, on the config's mesh)."""
  import time  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from mmjax import parallel, tasks  # pylint: disable=import-outside-toplevel
  from mmjax.data import sequences  # pylint: disable=import-outside-toplevel
  from mmjax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from mmjax.train import step as step_lib  # pylint: disable=import-outside-toplevel
  config = load_config(variant, sets)
  task = tasks.get(config.task)
  model = task.build_model(config)
  data = sequences.SequencesConfig(name="bench", num_train=config.batch_size)
  make = sequences.transform(train=False)
  rows = [make.random_map(sequences.make_example(data, "train", i), np.random.default_rng(i))
          for i in range(config.batch_size)]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  tx = state_lib.make_optimizer(config)
  state, shardings = parallel.init_sharded(
      lambda rng: state_lib.create_state(task.init_fn(model, config), tx, rng), mesh,
      jax.random.key(0))
  # the batch is an argument of the jitted step, so nothing in it folds into constants
  step = step_lib.make_train_step(task.make_loss_fn(model, config, mesh), tx, mesh, shardings)
  state = jax.block_until_ready(step(state, batch)[0])
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - start) / steps * 1e3)
  return float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(seq_configs.MODELS))
  parser.add_argument("--variants", default="unaligned,aligned")
  parser.add_argument("--data_dir", default="~/.cache/mmjax/datasets")
  parser.add_argument("--out", default="/tmp/mmjax_sequence_models")
  parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every config")
  parser.add_argument("--step_ms", action="store_true", help="time training steps, train nothing")
  args = parser.parse_args()
  if args.step_ms:
    print("| model | parameters | ms per training step |\n|---|---|---|")
    for model in args.models.split(","):
      print(f"| {model} | {parameters(model, args.set):,} | {step_ms(model, args.set):.0f} |",
            flush=True)
    return
  out = pathlib.Path(args.out).expanduser()
  variants = args.variants.split(",")
  table = []
  for model in args.models.split(","):
    got = {v: run(model if v == "unaligned" else f"{model},{v}", out, args.data_dir, args.set)
           for v in variants}
    table.append((model, parameters(model), got))
  t = "test/"
  print("\n| model | parameters | train s | " + " | ".join(f"{v} accuracy" for v in variants)
        + " | without audio | without video | without words | EMAP | EMAP model |")
  print("|---|---|---|" + "---|" * len(variants) + "---|---|---|---|---|")
  for model, params, got in table:
    u = got[variants[0]]
    cells = [f"{got[v][t + 'accuracy']:.3f}" for v in variants]
    cells += [f"{u.get(f'{t}accuracy_without_{s}', float('nan')):.3f}"
              for s in ("audio", "video", "words")]
    cells += [f"{u.get(t + k, float('nan')):.3f}" for k in ("emap_accuracy", "emap_model_accuracy")]
    print(f"| {model} | {params:,} | {u['train_s']:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
