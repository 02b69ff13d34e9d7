"""Evaluation throughput: embedding images/s on the zero-shot and retrieval paths, and ranking time.

    python bench/eval_throughput.py --presets tiny --dtype float32                  # CPU
    python bench/eval_throughput.py --presets B/16 --compile-only                   # CPU: FLOPs
    python bench/eval_throughput.py --presets B/32,B/16,L/14 --batch 1024 --attention cudnn  # GPU

Paths (random weights; the jitted functions are those of mmjax.train.evals / evaluate):
  zero-shot   images -> encode_image -> cosine logits against a (--classes, E) classifier -> top-5;
              items = images.
  retrieval   images and captions -> encode_image and encode_text; items = image-caption pairs.
  ranking     (N, E) image embeddings x (5N, E) caption embeddings (COCO's 5k images, 25k captions
              with --ranking 5000) -> top-10 in both directions, as recall@k needs; items = images.
Times are the median of --repeats calls after a warm-up call; MFU is from analytic forward FLOPs
(bench/_common.two_tower_flops) against the measured matmul peak in --dtype.
"""
from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

import _common as common
from mmjax.evaluate import zero_shot
from mmjax.models.two_tower import PRESETS, two_tower
from train_throughput import synthetic


def eval_paths(model, cfg: dict, batch: int, classes: int, ranking: int) -> dict:
  """{path: (fn(params, *inputs), input ShapeDtypeStructs, items per call, analytic FLOPs)}."""
  s, n, e = cfg["image_size"], cfg["text"]["context_length"], cfg["embed_dim"]
  images = jax.ShapeDtypeStruct((batch, s, s, 3), jnp.float32)
  tokens = jax.ShapeDtypeStruct((batch, n), jnp.int32)
  flops = common.two_tower_flops(cfg, batch)

  def zero_shot_top5(params, x, classifier):
    emb = model.apply({"params": params}, x, method="encode_image")          # (B, E)
    return jax.lax.top_k(zero_shot.zero_shot_logits(emb, classifier), 5)[1]  # (B, 5)

  def retrieval(params, x, t):
    v = {"params": params}
    return model.apply(v, x, method="encode_image"), model.apply(v, t, method="encode_text")

  def rank(params, img_emb, txt_emb):
    del params
    sims = img_emb @ txt_emb.T                                               # (N, 5N)
    k = min(10, img_emb.shape[0])
    return jax.lax.top_k(sims, k)[1], jax.lax.top_k(sims.T, k)[1]

  return {
      "zero-shot": (zero_shot_top5, (images, jax.ShapeDtypeStruct((classes, e), jnp.float32)),
                    batch, batch * (flops["image"] + 2 * e * classes)),
      "retrieval": (retrieval, (images, tokens), batch, batch * (flops["image"] + flops["text"])),
      "ranking": (rank, (jax.ShapeDtypeStruct((ranking, e), jnp.float32),
                         jax.ShapeDtypeStruct((5 * ranking, e), jnp.float32)),
                  ranking, 2 * ranking * 5 * ranking * e),
  }


def run(preset: str, batch: int, *, dtype=jnp.bfloat16, attention: str | None = None,
        classes: int = 1000, ranking: int = 5000, compile_only: bool = False,
        repeats: int = 5) -> dict:
  """{path: dict(compiled_flops, compiled_bytes, analytic_flops, items, and when timed seconds)}."""
  cfg = PRESETS[preset]
  model = two_tower(preset, dtype=dtype, implementation=attention)
  s, n = cfg["image_size"], cfg["text"]["context_length"]
  init = lambda key: nn.unbox(model.init(key, jnp.zeros((1, s, s, 3)),  # noqa: E731
                                         jnp.zeros((1, n), jnp.int32))["params"])
  param_specs = jax.eval_shape(init, jax.random.key(0))
  params = None if compile_only else jax.jit(init)(jax.random.key(0))
  results = {}
  for path, (fn, specs, items, flops) in eval_paths(model, cfg, batch, classes, ranking).items():
    compiled = jax.jit(fn).lower(param_specs, *specs).compile()
    r = dict(compiled_flops=common.compiled_flops(compiled), analytic_flops=flops, items=items,
             compiled_bytes=common.compiled_bytes(compiled))
    if not compile_only:
      args = synthetic(specs, cfg["text"]["vocab_size"])
      call = lambda c=compiled, a=args: c(params, *a)  # noqa: E731
      r["seconds"] = common.median_seconds(call, repeats=repeats)
    results[path] = r
  return results


HEADER = ("preset", "attention", "batch", "path", "items/s", "ms / call", "GFLOP/item compiled",
          "GFLOP/item analytic", "MFU %", "mem GiB compiled")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default="B/32,B/16,L/14")
  parser.add_argument("--batch", type=int, default=1024)
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  parser.add_argument("--attention", default="default",
                      help="comma-separated: default (XLA decides), xla, cudnn")
  parser.add_argument("--classes", type=int, default=1000, help="zero-shot classes (ImageNet)")
  parser.add_argument("--ranking", type=int, default=5000, help="images ranked against 5x texts")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--peak-n", type=int, default=0, help="0: 8192 on an accelerator, 2048 CPU")
  parser.add_argument("--compile-only", action="store_true")
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  peak = None if args.compile_only else common.matmul_peak_tflops(
      args.peak_n or common.default_peak_n(), dtype)
  print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}, {args.dtype}, "
        f"{args.classes} classes, ranking {args.ranking} x {5 * args.ranking}, {args.dtype} "
        f"matmul peak {common.fmt(peak)} TFLOP/s")
  common.print_header(HEADER)
  for preset in args.presets.split(","):
    for attention in args.attention.split(","):
      results = run(preset, args.batch, dtype=dtype,
                    attention=None if attention == "default" else attention, classes=args.classes,
                    ranking=args.ranking, compile_only=args.compile_only, repeats=args.repeats)
      for path, r in results.items():
        common.print_row([preset, attention, args.batch if path != "ranking" else args.ranking,
                          path] + _cells(r, peak))


def _cells(r: dict, peak: float | None) -> list[str]:
  """items/s, ms, compiled and analytic GFLOP per item, MFU and compiled memory of one path."""
  seconds, items, flops = r.get("seconds"), r["items"], r["compiled_flops"]
  mfu = 100 * r["analytic_flops"] / seconds / 1e12 / peak if seconds and peak else None
  return [common.fmt(items / seconds if seconds else None), common.fmt(seconds, scale=1e-3),
          common.fmt(flops / items if flops else None, scale=1e9),
          common.fmt(r["analytic_flops"] / items, scale=1e9), common.fmt(mfu),
          common.fmt(r["compiled_bytes"], 2, common.GIB)]


if __name__ == "__main__":
  main()
