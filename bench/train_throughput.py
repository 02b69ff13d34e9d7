"""Training throughput of the full CLIP train step: images/s, TFLOP/s, MFU, memory per accelerator.

    python bench/train_throughput.py --presets tiny --dtype float32             # CPU smoke run
    python bench/train_throughput.py --presets B/32,B/16 --compile-only         # CPU: FLOPs, memory
    python bench/train_throughput.py --presets B/16 --batch 256 --attention xla,cudnn   # GPU

The timed step is the trainer's own (mmjax.tasks: the clip task's build_model, make_loss_fn with the global
CLIP loss, make_optimizer's AdamW, make_train_step), on one device, on a synthetic batch kept in
device memory. Each round runs --steps steps and waits on the last; the table gives the median
round after --warmup untimed steps (compilation excluded).

  GFLOP/pair  compiled: XLA's cost analysis of the compiled step / batch (counts elementwise ops and
              AdamW too, but nothing inside cuDNN attention, and a scanned layer stack only once);
              analytic: 3 x the forward matmul FLOPs (bench/_common.two_tower_flops), the convention
              of OpenCLIP's 123.8 GFLOP per ViT-B/16 pair.
  TFLOP/s     compiled and analytic FLOPs per step / step time (they differ where the compiled count
              misses cuDNN attention or scanned layers);  MFU: analytic TFLOP/s / the measured
              --dtype matmul peak (the issue's OpenCLIP figure: 2,603 x 123.8 GFLOP / 795 = 40.6%).
  mem GiB     compiled: XLA's memory analysis of the step (arguments + outputs + temporaries);
              peak: the device's peak bytes in use since the process started (GPU; one preset per
              call gives each preset's own peak).
"""
from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

import _common as common
from mmjax import parallel
from mmjax.models.two_tower import PRESETS
from mmjax import tasks
from mmjax.train import state as state_lib, step as step_lib

# The batches (OpenCLIP measured B/32 at 512 and B/16 at 256 on one H100 80GB).
DEFAULT_BATCH = {"tiny": 32, "S/16": 256, "B/32": 512, "B/16": 256, "L/14": 128}
OPENCLIP_GFLOP_PER_PAIR = {"B/16": 123.8}  # quoted in the issue for OpenCLIP 3.3.0


def bench_config(preset: str, batch: int, *, dtype: str = "bfloat16", attention: str = "",
                 scan: bool = False, remat: str = "none", loss_block: int = 0,
                 grad_clip: float = 0.0) -> ml_collections.ConfigDict:
  """A 'clip' task config for the trainer's code path with OpenCLIP's AdamW hyper-parameters
  (b1 0.9, b2 0.98, eps 1e-6, weight decay 0.2; no gradient clipping unless grad_clip > 0)."""
  cfg = PRESETS[preset]
  return ml_collections.ConfigDict(dict(
      task="clip", lock="", batch_size=batch, loss_block_size=loss_block,
      dataset=dict(image_size=cfg["image_size"]), context_length=cfg["text"]["context_length"],
      model=dict(preset=preset, dtype=dtype, implementation=attention, remat=remat, scan=scan,
                 image={}, text={}),
      lr=5e-4, end_lr_factor=0.0, warmup_steps=2000, total_steps=100_000, weight_decay=0.2,
      b1=0.9, b2=0.98, eps=1e-6, grad_clip=grad_clip, grad_accum=1))


def _batch_specs(config, mesh) -> dict:
  """ShapeDtypeStructs of one global batch: float32 (B, S, S, 3) images, int32 (B, L) tokens."""
  b, s, n = config.batch_size, config.dataset.image_size, config.context_length
  return {"image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32,
                                        sharding=parallel.batch_sharding(mesh, 4)),
          "tokens": jax.ShapeDtypeStruct((b, n), jnp.int32,
                                         sharding=parallel.batch_sharding(mesh, 2))}


def synthetic(specs, vocab_size: int, seed: int = 0):
  """Random arrays for a tree of ShapeDtypeStructs, placed by their shardings: normal floats,
  integers uniform in [1, vocab_size)."""
  leaves, treedef = jax.tree.flatten(specs)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  arrays = [jax.random.randint(k, x.shape, 1, vocab_size, x.dtype)
            if jnp.issubdtype(x.dtype, jnp.integer) else jax.random.normal(k, x.shape, x.dtype)
            for k, x in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, [jax.device_put(a, x.sharding) if x.sharding else a
                                      for a, x in zip(arrays, leaves)])


def compile_step(config):
  """The trainer's train step for config on the first device, compiled ahead of time.

  Returns (compiled step (state, batch) -> (state, metrics) with the state donated, the state
  factory create(rng), the mesh, abstract batch). Nothing is allocated: the state is abstract.
  """
  mesh = parallel.make_mesh(devices=jax.devices()[:1])
  task = tasks.get(config.task)
  model = task.build_model(config)
  tx = state_lib.make_optimizer(config)
  create = lambda rng: state_lib.create_state(task.init_fn(model, config), tx, rng)  # noqa: E731
  abstract = jax.eval_shape(create, jax.random.key(0))
  shardings = nn.unbox(parallel.logical_shardings(abstract, mesh))
  state_specs = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                             nn.unbox(abstract), shardings)
  step = step_lib.make_train_step(task.make_loss_fn(model, config, mesh), tx, mesh, shardings)
  batch = _batch_specs(config, mesh)
  compiled = jax.jit(step, donate_argnums=0).lower(state_specs, batch).compile()
  return compiled, create, mesh, batch, state_specs


def run(config, *, compile_only: bool = False, steps: int = 10, repeats: int = 5,
        warmup: int = 2) -> dict:
  """Compiles (and unless compile_only, times) the train step of config. Returns a dict:
  params, compile_s, compiled_flops (one step), compiled_bytes, analytic_flops (one step), and when
  timed step_s (median seconds per step), images_s, peak_bytes (None on CPU)."""
  start = time.perf_counter()
  compiled, create, mesh, batch_specs, state_specs = compile_step(config)
  b = config.batch_size
  out = dict(params=sum(x.size for x in jax.tree.leaves(state_specs.params)),
             compile_s=time.perf_counter() - start, compiled_flops=common.compiled_flops(compiled),
             compiled_bytes=common.compiled_bytes(compiled),
             analytic_flops=b * common.two_tower_flops(PRESETS[config.model.preset], b)["train"])
  if compile_only:
    return out
  state, _ = parallel.init_sharded(create, mesh, jax.random.key(0))
  batch = synthetic(batch_specs, PRESETS[config.model.preset]["text"]["vocab_size"])
  holder = [state]

  def one_step():
    holder[0], metrics = compiled(holder[0], batch)
    return metrics["loss"]

  seconds = common.median_seconds(one_step, repeats=repeats, warmup=warmup, inner=steps)
  return {**out, "step_s": seconds, "images_s": b / seconds,
          "peak_bytes": common.peak_device_bytes()}


HEADER = ("preset", "batch", "attention", "img/s", "step ms", "GFLOP/pair compiled",
          "GFLOP/pair analytic", "TFLOP/s compiled", "TFLOP/s analytic", "MFU %",
          "mem GiB compiled", "peak GiB")


def row(preset: str, batch: int, attention: str, r: dict, peak_tflops: float | None) -> list:
  """Table cells of one run() result (MFU from the analytic FLOPs)."""
  seconds, flops = r.get("step_s"), r["compiled_flops"]
  per_second = lambda f: f / seconds / 1e12 if f and seconds else None  # noqa: E731
  tflops = per_second(r["analytic_flops"])
  mfu = 100 * tflops / peak_tflops if tflops and peak_tflops else None
  return [preset, batch, attention, common.fmt(r.get("images_s")),
          common.fmt(seconds, scale=1e-3), common.fmt(flops / batch if flops else None, scale=1e9),
          common.fmt(r["analytic_flops"] / batch, scale=1e9), common.fmt(per_second(flops)),
          common.fmt(tflops), common.fmt(mfu), common.fmt(r["compiled_bytes"], 2, common.GIB),
          common.fmt(r.get("peak_bytes"), 2, common.GIB)]


def batch_sizes(arg: str, presets: list[str]) -> list[int]:
  """--batch: '' (each preset's DEFAULT_BATCH), one size for all, or one per preset."""
  if not arg:
    return [DEFAULT_BATCH.get(p, 256) for p in presets]
  sizes = [int(s) for s in arg.split(",")]
  if len(sizes) not in (1, len(presets)):
    raise ValueError(f"--batch {arg!r}: give one size or one per preset ({len(presets)})")
  return sizes * len(presets) if len(sizes) == 1 else sizes


def add_step_flags(parser: argparse.ArgumentParser, presets: str) -> None:
  """Flags shared with compare_openclip.py."""
  parser.add_argument("--presets", default=presets)
  parser.add_argument("--batch", default="", help="one size, one per preset, or '' (defaults)")
  parser.add_argument("--attention", default="default",
                      help="mmjax variants, comma-separated: default (XLA decides), xla, cudnn")
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                      help="compute dtype (params and optimizer state stay float32)")
  parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
  parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile)")
  parser.add_argument("--peak-n", type=int, default=0,
                      help="matmul size for the peak (0: 8192 on an accelerator, 2048 on CPU)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_step_flags(parser, presets="B/32,B/16,L/14")
  parser.add_argument("--scan", action="store_true", help="nn.scan over layers (compiled "
                      "FLOPs then count one layer per tower)")
  parser.add_argument("--remat", default="none", choices=["none", "full", "dots"])
  parser.add_argument("--loss-block", type=int, default=0, help="> 0: chunked_clip_loss")
  parser.add_argument("--compile-only", action="store_true",
                      help="compile and analyse (FLOPs, memory) without allocating or running")
  args = parser.parse_args()
  presets = args.presets.split(",")
  peak = None
  if not args.compile_only:
    peak = common.matmul_peak_tflops(args.peak_n or common.default_peak_n(), jnp.dtype(args.dtype))
  timing = ("compile only" if args.compile_only
            else f"median of {args.repeats} x {args.steps} steps")
  print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}, {args.dtype}, AdamW, {timing}"
        f", {args.dtype} matmul peak {common.fmt(peak)} TFLOP/s; OpenCLIP's ViT-B/16 count: "
        f"{OPENCLIP_GFLOP_PER_PAIR['B/16']} GFLOP/pair")
  common.print_header(HEADER)
  for preset, batch in zip(presets, batch_sizes(args.batch, presets)):
    for attention in args.attention.split(","):
      config = bench_config(preset, batch, dtype=args.dtype,
                            attention="" if attention == "default" else attention, scan=args.scan,
                            remat=args.remat, loss_block=args.loss_block)
      r = run(config, compile_only=args.compile_only, steps=args.steps, repeats=args.repeats,
              warmup=args.warmup)
      common.print_row(row(preset, batch, attention, r, peak))


if __name__ == "__main__":
  main()
