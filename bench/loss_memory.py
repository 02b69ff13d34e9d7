"""Memory and time of the naive vs chunked CLIP loss with gradient, as a function of batch size.

    python bench/loss_memory.py                                                   # CPU defaults
    python bench/loss_memory.py --sizes 1048576 --compile-only --block 512,1024,2048   # CPU
    # GPU: the naive loss up to where it no longer fits, then the chunked one at 1,048,576
    python bench/loss_memory.py --sizes 16384,32768,49152,65536 --block 1024 --naive-max 65536
    python bench/loss_memory.py --sizes 1048576 --block 1024 --naive-max 0 --repeats 2

For each batch size B it compiles jax.value_and_grad of the loss w.r.t. (images, texts, scale) on
(B, dim) float32 embeddings and prints the compiled temporary memory (XLA's memory_analysis), the
peak device memory where the backend reports it (GPU/TPU; the process's peak so far, so run the
largest chunked size in a call of its own), and the median wall time of repeated calls. A naive
loss that does not fit on the device prints OOM. --compile-only compiles without allocating or
running anything.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp

from mmjax import losses


def _measure(loss_fn, b: int, dim: int, repeats: int,
             compile_only: bool = False) -> tuple[float, float | None, float | None]:
  """(temp MiB, peak device MiB or None, median ms or None) of value_and_grad(loss_fn) at b."""
  step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))
  spec = jax.ShapeDtypeStruct((b, dim), jnp.float32)
  compiled = step.lower(spec, spec, jax.ShapeDtypeStruct((), jnp.float32)).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
  if compile_only:
    return temp, None, None
  kx, ky = jax.random.split(jax.random.key(b))
  x = jax.random.normal(kx, (b, dim), jnp.float32)
  y = x + jax.random.normal(ky, (b, dim), jnp.float32)
  x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
  y = y / jnp.linalg.norm(y, axis=1, keepdims=True)
  scale = jnp.float32(1 / 0.07)
  jax.block_until_ready(compiled(x, y, scale))  # warm-up, excluded
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(x, y, scale))
    times.append(1e3 * (time.perf_counter() - start))
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return temp, (peak / 2**20 if peak is not None else None), statistics.median(times)


def _measure_or_oom(loss_fn, b: int, dim: int, repeats: int, compile_only: bool):
  """_measure, or ('OOM', None, 'OOM') when the device runs out of memory."""
  try:
    return _measure(loss_fn, b, dim, repeats, compile_only)
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    return "OOM", None, "OOM"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="512,1024,2048,4096,8192",
                      help="comma-separated batch sizes")
  parser.add_argument("--dim", type=int, default=512, help="embedding width")
  parser.add_argument("--block", default="512",
                      help="chunked_clip_loss block_size (comma-separated: one row per block)")
  parser.add_argument("--naive-max", type=int, default=8192,
                      help="skip the naive loss above this batch size (its B x B buffers)")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
  parser.add_argument("--compile-only", action="store_true",
                      help="compiled temporary memory only: nothing is allocated or run")
  args = parser.parse_args()
  print(f"# {jax.devices()[0].device_kind}, jax {jax.__version__}, dim={args.dim}, "
        f"median of {args.repeats}")
  header = ("batch", "block", "naive temp MiB", "chunked temp MiB", "naive ms", "chunked ms",
            "chunked peak MiB", "time ratio")
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for b in (int(s) for s in args.sizes.split(",")):
    n_temp, _, n_ms = (_measure_or_oom(losses.clip_loss, b, args.dim, args.repeats,
                                       args.compile_only)
                       if b <= args.naive_max else (None, None, None))
    for block in (int(s) for s in args.block.split(",")):
      chunked = functools.partial(losses.chunked_clip_loss, block_size=block)
      c_temp, c_peak, c_ms = _measure(chunked, b, args.dim, args.repeats, args.compile_only)
      ratio = c_ms / n_ms if isinstance(n_ms, float) and c_ms else None
      cells = [f"{b:,}", f"{block:,}", _fmt(n_temp), _fmt(c_temp), _fmt(n_ms), _fmt(c_ms),
               _fmt(c_peak), _fmt(ratio, 2)]
      print("| " + " | ".join(cells) + " |", flush=True)


def _fmt(v, digits=1) -> str:
  return "-" if v is None else v if isinstance(v, str) else f"{v:,.{digits}f}"


if __name__ == "__main__":
  main()
