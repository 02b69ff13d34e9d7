"""mmjax vs OpenCLIP training throughput on one device: same model, batch, precision, optimizer.

    pip install open_clip_torch==3.3.0       # beside mmjax, with the torch / torchvision of the GPU
    python bench/compare_openclip.py --presets B/16 --batch 256 --attention xla,cudnn     # GPU
    python bench/compare_openclip.py --presets B/32 --batch 512 --openclip eager,compile   # GPU
    python bench/compare_openclip.py --presets tiny --dtype float32 --openclip eager       # CPU

Each measurement runs in a process of its own (so each framework has the whole device and its own
peak memory), started by this one; the table gives both and the ratio mmjax / OpenCLIP. Where CUDA
builds of jax and torch cannot share one environment, --openclip-python runs the OpenCLIP side with
another environment's Python (torch, open_clip_torch and mmjax with CPU jax installed there).

OpenCLIP side, as open_clip_train runs it: open_clip.CLIP built from the preset (the same widths,
depths, heads, patch size, context and vocabulary: the parameter counts are printed to check),
torch.optim.AdamW with no weight decay on gains, biases and the logit scale, ClipLoss, autocast to
bfloat16 (--dtype bfloat16, OpenCLIP's --precision amp_bf16), TF32 matmuls and cudnn.benchmark on,
the logit scale clamped after each step, optionally torch.compile of the model ('compile').
mmjax side: bench/train_throughput.py's step (the trainer's own), one variant per --attention.
Both: synthetic batches in device memory, AdamW(lr 5e-4, betas (0.9, 0.98), eps 1e-6, wd 0.2), no
gradient clipping; the median of --repeats rounds of --steps steps after --warmup steps. MFU is
analytic FLOPs (3 x forward matmuls) per second over the larger of the two frameworks' measured
matmul peaks in --dtype.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys

import _common as common
from mmjax.models.two_tower import PRESETS
from train_throughput import add_step_flags, batch_sizes

INSTALL = ("pip install open_clip_torch==3.3.0 (it needs torch and torchvision builds that match "
           "each other and the device; on a CPU-only machine the PyPI torchvision fails to load)")


def openclip_model(preset: str):
  """open_clip.CLIP with the architecture of mmjax's preset (GELU, class-token pooling, argmax
  end-of-text pooling, no projection biases, as OpenAI's CLIP)."""
  import open_clip  # pylint: disable=import-outside-toplevel
  cfg = PRESETS[preset]
  img, txt = cfg["image"], cfg["text"]
  vision = dict(image_size=cfg["image_size"], layers=img["depth"], width=img["width"],
                patch_size=img["patch_size"], head_width=img["width"] // img["num_heads"],
                mlp_ratio=img["mlp_dim"] / img["width"])
  text = dict(context_length=txt["context_length"], vocab_size=txt["vocab_size"],
              width=txt["width"], heads=txt["num_heads"], layers=txt["depth"],
              mlp_ratio=txt["mlp_dim"] / txt["width"])
  return open_clip.CLIP(cfg["embed_dim"], vision_cfg=vision, text_cfg=text, output_dict=True)


def _torch_sync(torch, device: str):
  """Waits for the device (CPU torch ops are synchronous already)."""
  return (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)


def torch_matmul_peak(n: int, dtype: str, repeats: int = 5, inner: int = 10) -> float:
  """Measured TFLOP/s of one (n, n) @ (n, n) torch matmul in dtype on the default device."""
  import torch  # pylint: disable=import-outside-toplevel
  device = "cuda" if torch.cuda.is_available() else "cpu"
  a, b = (torch.randn(n, n, device=device, dtype=getattr(torch, dtype)) for _ in range(2))
  seconds = common.median_seconds(lambda: a @ b, repeats=repeats, inner=inner,
                                  sync=_torch_sync(torch, device))
  return 2 * n ** 3 / seconds / 1e12


def openclip_run(preset: str, batch: int, mode: str, args) -> dict:
  """OpenCLIP's training step (open_clip_train.train.train_one_epoch without the data loader);
  mode 'eager' or 'compile' (torch.compile of the model). Returns params, images_s, step_s,
  peak_bytes, peak_tflops."""
  import torch  # pylint: disable=import-outside-toplevel
  import open_clip  # pylint: disable=import-outside-toplevel
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
  cfg = PRESETS[preset]
  model = openclip_model(preset).to(device).train()
  exclude = lambda n, p: (p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n  # noqa: E731
                          or "logit_scale" in n)
  named = list(model.named_parameters())
  optimizer = torch.optim.AdamW(
      [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
       {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.2}],
      lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
  loss_fn = open_clip.ClipLoss()
  forward = torch.compile(model) if mode == "compile" else model
  s, n = cfg["image_size"], cfg["text"]["context_length"]
  images = torch.randn(batch, 3, s, s, device=device)
  texts = torch.randint(1, cfg["text"]["vocab_size"], (batch, n), device=device)
  use_amp = args.dtype == "bfloat16"

  def step():
    optimizer.zero_grad()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=use_amp):
      out = forward(images, texts)
      loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
    loss.backward()
    optimizer.step()
    with torch.no_grad():
      model.logit_scale.clamp_(0, math.log(100))
    return loss

  seconds = common.median_seconds(step, repeats=args.repeats, warmup=args.warmup,
                                  inner=args.steps, sync=_torch_sync(torch, device))
  return dict(params=sum(p.numel() for p in model.parameters()), images_s=batch / seconds,
              step_s=seconds,
              peak_bytes=torch.cuda.max_memory_allocated() if device == "cuda" else None,
              peak_tflops=torch_matmul_peak(args.peak_n or (8192 if device == "cuda" else 2048),
                                            args.dtype),
              version=f"open_clip {open_clip.__version__}, torch {torch.__version__}")


def mmjax_run(preset: str, batch: int, attention: str, args) -> dict:
  """bench/train_throughput.py's measurement of the trainer's step, plus the JAX matmul peak."""
  import jax  # pylint: disable=import-outside-toplevel
  import train_throughput  # pylint: disable=import-outside-toplevel
  config = train_throughput.bench_config(preset, batch, dtype=args.dtype,
                                         attention="" if attention == "default" else attention)
  r = train_throughput.run(config, steps=args.steps, repeats=args.repeats, warmup=args.warmup)
  r["peak_tflops"] = common.matmul_peak_tflops(args.peak_n or common.default_peak_n(),
                                               jax.numpy.dtype(args.dtype))
  r["version"] = f"jax {jax.__version__}, {jax.devices()[0].device_kind}"
  return r


def _child(args) -> None:
  """Runs one measurement (--side openclip or mmjax, --variant) and prints it as a RESULT line."""
  run = openclip_run if args.side == "openclip" else mmjax_run
  r = run(args.presets, int(args.batch), args.variant, args)
  print("RESULT " + json.dumps(r), flush=True)


def _spawn(side: str, variant: str, preset: str, batch: int, args) -> dict:
  """One measurement in a fresh process; its RESULT dict, or {'error': ...}."""
  python = args.openclip_python if side == "openclip" and args.openclip_python else sys.executable
  cmd = [python, __file__, "--side", side, "--variant", variant, "--presets", preset,
         "--batch", str(batch), "--dtype", args.dtype, "--steps", str(args.steps),
         "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--peak-n", str(args.peak_n)]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
  return {"error": f"{side} {variant} exited with {proc.returncode}:\n  " + "\n  ".join(tail)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_step_flags(parser, presets="B/16")
  parser.add_argument("--openclip", default="compile",
                      help="OpenCLIP variants, comma-separated: eager, compile (torch.compile)")
  parser.add_argument("--openclip-python", default="",
                      help="the Python of another environment for the OpenCLIP side (with torch, "
                      "open_clip_torch and mmjax on CPU jax), where CUDA builds of jax and torch "
                      "conflict in one environment; default: this one")
  parser.add_argument("--side", choices=["openclip", "mmjax"], help=argparse.SUPPRESS)
  parser.add_argument("--variant", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.side:
    _child(args)
    return
  for module in ("torch", "open_clip") if not args.openclip_python else ():
    if importlib.util.find_spec(module) is None:
      sys.exit(f"compare_openclip.py: the package providing {module!r} is not installed; "
               f"{INSTALL}")
  print(f"# median of {args.repeats} x {args.steps} steps after {args.warmup}, {args.dtype}, "
        "AdamW, synthetic data in device memory")
  any_failed = False
  common.print_header(("framework", "variant", "preset", "batch", "params", "img/s", "step ms",
                       "MFU %", "peak GiB"))
  presets = args.presets.split(",")
  for preset, batch in zip(presets, batch_sizes(args.batch, presets)):
    runs = [("openclip", v) for v in args.openclip.split(",")]
    runs += [("mmjax", v) for v in args.attention.split(",")]
    results = {run: _spawn(*run, preset, batch, args) for run in runs}
    failed = {run: r["error"] for run, r in results.items() if "error" in r}
    for (side, variant), error in failed.items():
      print(f"# {side} {variant} failed: {error}", file=sys.stderr)
    ok = {run: r for run, r in results.items() if "error" not in r}
    peak = max((r["peak_tflops"] for r in ok.values()), default=None)
    flops = common.two_tower_flops(PRESETS[preset], batch)["train"]
    for (side, variant), r in ok.items():
      mfu = 100 * flops * r["images_s"] / 1e12 / peak if peak else None
      common.print_row([f"{side} ({r['version']})", variant, preset, batch, f"{r['params']:,}",
                        common.fmt(r["images_s"]), common.fmt(r["step_s"], scale=1e-3),
                        common.fmt(mfu), common.fmt(r["peak_bytes"], 2, common.GIB)])
    if any(s == "mmjax" for s, _ in ok):
      ours, our_variant = max((r["images_s"], v) for (s, v), r in ok.items() if s == "mmjax")
      for (side, variant), r in ok.items():
        if side == "openclip":
          print(f"# {preset}: mmjax ({our_variant}) / OpenCLIP ({variant}) = "
                f"{ours / r['images_s']:.2f} (goal >= 1.25)")
    print(f"# matmul peak (larger of jax and torch, {args.dtype}): {common.fmt(peak)} TFLOP/s")
    any_failed = any_failed or bool(failed)
  if any_failed:
    sys.exit(1)

if __name__ == "__main__":
  main()
