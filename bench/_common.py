"""Helpers shared by the benchmark scripts: timing, a matmul peak, analytic FLOPs, compiled stats.

Conventions (those of the issue and of OpenCLIP's published numbers):
  - times exclude compilation and warm-up calls and are the median of repeated rounds;
  - training FLOPs per image-text pair = 3 x the forward matmul FLOPs (backward = 2 x forward),
    counting attention's two (T, T) matmuls in full (causal attention computes the whole square);
  - MFU = analytic FLOPs per second / the measured throughput of one large matmul in the same dtype.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

GIB = 2 ** 30


def median_seconds(run: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, inner: int = 1,
                   sync: Callable[[Any], Any] = jax.block_until_ready) -> float:
  """Median over `repeats` rounds of the seconds per call of run(), after `warmup` untimed calls.

  Each round makes `inner` calls and waits (sync) only on the last one's result, so dispatch
  overlaps with compute as in a training loop; the round time is divided by `inner`.
  """
  for _ in range(warmup):
    sync(run())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(inner):
      out = run()
    sync(out)
    times.append((time.perf_counter() - start) / inner)
  return statistics.median(times)


def matmul_peak_tflops(n: int, dtype=jnp.bfloat16, repeats: int = 5, inner: int = 10) -> float:
  """Measured TFLOP/s of one jitted (n, n) @ (n, n) matmul in `dtype` (2 n^3 FLOPs per call)."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), dtype)
  b = jax.random.normal(kb, (n, n), dtype)
  matmul = jax.jit(jnp.matmul)
  seconds = median_seconds(lambda: matmul(a, b), repeats=repeats, inner=inner)
  return 2 * n ** 3 / seconds / 1e12


def default_peak_n() -> int:
  """8192 (the issue's reference matmul) on an accelerator, 2048 on a CPU (seconds, not minutes)."""
  return 2048 if jax.default_backend() == "cpu" else 8192


def transformer_flops(tokens: int, width: int, depth: int, mlp_dim: int) -> int:
  """Forward matmul FLOPs of `depth` pre-LN blocks on one sequence of `tokens` tokens.

  Per block and token: q, k, v and output projections 4 * 2 * D^2, the MLP 2 * 2 * D * M; per
  block: q k^T and attention @ v, 2 * 2 * T^2 * D.
  """
  per_token = 8 * width ** 2 + 4 * width * mlp_dim
  return depth * (tokens * per_token + 4 * tokens ** 2 * width)


def two_tower_flops(cfg: dict, batch: int) -> dict[str, float]:
  """Analytic forward FLOPs of a TwoTower preset (mmjax.models.two_tower.PRESETS[name]).

  Returns per-example forward FLOPs of each tower ('image', 'text': encoder + projection; the image
  tower includes the patch embedding), the loss's (B, E) @ (E, B) logits per pair ('loss'), and
  'train': 3 x their sum, the forward + backward FLOPs per image-text pair.
  """
  img, txt, e = cfg["image"], cfg["text"], cfg["embed_dim"]
  patches = (cfg["image_size"] // img["patch_size"]) ** 2
  image = (2 * patches * img["patch_size"] ** 2 * 3 * img["width"]             # patch embedding
           + transformer_flops(patches + 1, img["width"], img["depth"], img["mlp_dim"])
           + 2 * img["width"] * e)                                             # projection
  text = (transformer_flops(txt["context_length"], txt["width"], txt["depth"], txt["mlp_dim"])
          + 2 * txt["width"] * e)
  loss = 2 * batch * e                                    # (B, E) @ (E, B) / B pairs
  return dict(image=image, text=text, loss=loss, train=3 * (image + text + loss))


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call from XLA's cost analysis (None where the backend gives none).

  XLA counts a while loop's body once (so lax.scan and nn.scan layers are undercounted) and gives
  custom calls such as cuDNN attention no FLOPs.
  """
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else None
  return None if not cost or "flops" not in cost else float(cost["flops"])


def compiled_bytes(compiled) -> int | None:
  """Device memory one call needs by XLA's memory analysis: arguments + outputs + temporaries,
  less the outputs aliased to (donated) arguments."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def peak_device_bytes() -> int | None:
  """The first device's peak bytes in use since the process started (GPU/TPU; None on CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def print_header(header: Sequence[str]) -> None:
  """The header of a markdown table (the format of BENCHMARKS.md)."""
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header), flush=True)


def print_row(cells: Sequence[Any]) -> None:
  print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def fmt(value, digits: int | None = None, scale: float = 1.0) -> str:
  """value / scale with thousands separators ('-' for None); digits=None: 1 decimal from 100 up,
  2 from 1 up, else 3 significant figures."""
  if value is None:
    return "-"
  v = value / scale
  if digits is None:
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"
  return f"{v:,.{digits}f}"
