"""Pieces the experiment configs are built from (each config composes these; none builds on
another experiment's config).

    c = common.base("clip")                      # trainer defaults: optimizer, mesh, cadence
    c.dataset = common.dataset("shapes", image_size=64, eval_splits=("test",))
    c.model = common.model("B/16", dtype="bfloat16")
    c.evals = common.two_tower_evals(every=500)
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

DATA_DIR = "~/.cache/mmjax/datasets"


def eval_only():
  """every=None (run by eval.py only) that --config.evals.NAME.every=N can still override."""
  return config_dict.placeholder(int)


def base(task: str, **overrides) -> ml_collections.ConfigDict:
  """Trainer defaults: AdamW with OpenCLIP's betas and eps, warmup + cosine, global-norm clipping,
  a pure data-parallel mesh, logging and checkpoint cadence; `overrides` replace any field."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  c.batch_size = 256
  c.total_steps = 1000
  c.lr = 1e-3
  c.end_lr_factor = 0.0
  c.warmup_steps = 100
  c.weight_decay = 0.1
  c.b1, c.b2, c.eps = 0.9, 0.98, 1e-6
  c.grad_clip = 1.0
  c.grad_accum = 1
  c.lock = ""                    # LiT: 'image' or 'text' tower frozen
  c.loss_block_size = 0          # > 0: chunked_clip_loss with this block size
  c.mesh = mesh()
  c.log_every = 100
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.eval_batch_size = 500
  c.worker_count = 0
  c.update(overrides)
  return c


def mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Device mesh sizes ('data', 'fsdp', 'tensor'); one may be -1 (the remaining devices)."""
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def dataset(name: str, *, data_dir: str = DATA_DIR, image_size: int = 64,
            train_split: str = "train", eval_splits=("test",), builder_kwargs=None,
            cache: bool = False) -> ml_collections.ConfigDict:
  """config.dataset: a dataset of mmjax.data.datasets (or a dotted path) and its splits; cache
  holds the training and eval splits in memory once decoded (small datasets)."""
  return ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, image_size=image_size, train_split=train_split,
      eval_splits=tuple(eval_splits), builder_kwargs=dict(builder_kwargs or {}), cache=cache))


def model(preset: str, *, dtype: str = "float32", remat: str = "none", scan: bool = False,
          implementation: str = "", image=None, text=None, **more) -> ml_collections.ConfigDict:
  """config.model for the two-tower presets: preset, compute dtype, attention implementation,
  remat / scan, and overrides of the image and text towers."""
  return ml_collections.ConfigDict(dict(
      preset=preset, dtype=dtype, remat=remat, scan=scan, implementation=implementation,
      image=dict(image or {}), text=dict(text or {}), **more))


def two_tower_evals(*, every: int = 0, splits=None, report: bool = True) -> dict:
  """Evaluators of a two-tower model on a dataset with class names and captions: zero-shot and
  retrieval every `every` steps (0: after the last step); with report, also a linear probe,
  cross-modal transfer and embedding arithmetic, for eval.py only (every=None)."""
  on_splits = {} if splits is None else {"splits": tuple(splits)}
  evals = {"zero_shot": dict(type="zero_shot", every=every, **on_splits),
           "retrieval": dict(type="retrieval", every=every, **on_splits)}
  if report:
    evals.update(probe=dict(type="probe", every=eval_only()),
                 transfer=dict(type="transfer", every=eval_only()),
                 arithmetic=dict(type="arithmetic", every=eval_only(), **on_splits))
  return evals


def cpu_towers(variant: str = "") -> ml_collections.ConfigDict:
  """Towers that train in minutes on a CPU, the shapes demo's: a hue-pooled ConvNet and a
  one-layer text transformer (BENCHMARKS.md "Demo" says why); "tiny" shrinks both for tests."""
  if variant == "tiny":
    return model("tiny", image=dict(arch="cnn", channels=(8, 16), pool="max", hue_pool=True),
                 text=dict(width=32, depth=1, num_heads=2, mlp_dim=64))
  return model("tiny", image=dict(arch="cnn", channels=(16, 64, 128, 128), pool="max",
                                  hue_pool=True),
               text=dict(width=64, depth=1, num_heads=4, mlp_dim=256))


def shapes_data(variant: str = "", eval_splits=("test", "test_unseen")) -> ml_collections.ConfigDict:
  """The embedded shapes dataset, held in memory; "tiny": 256 / 48 / 24 examples."""
  sizes = dict(num_train=256, num_test=48, num_test_unseen=24) if variant == "tiny" else {}
  return dataset("shapes", image_size=64, eval_splits=eval_splits, builder_kwargs=sizes,
                 cache=True)


def web_clip(shards: str, total_steps: int, variant: str = "", *,
             batch_size: int = 4096) -> ml_collections.ConfigDict:
  """CLIP B/16 with OpenCLIP's recipe (AdamW 5e-4, weight decay 0.2, 2,000 warmup steps, CLIP BPE,
  bf16, scanned layers) streamed from img2dataset WebDataset shards (the "webdataset" dataset:
  nothing prepared; each shard's member offsets are indexed once, beside it or under data_dir);
  16 grain worker processes per host (worker_count: the batches and the saved data position are
  the same for any count); --workdir and data_dir may be gs:// URLs (mmjax.paths).
  "tiny": the same code path on a CPU, tiny towers and byte tokens, a handful of steps."""
  check_variant(variant)
  c = base("clip", batch_size=batch_size, total_steps=total_steps, lr=5e-4,
           warmup_steps=2000, weight_decay=0.2, log_every=100, checkpoint_every=2000,
           keep_checkpoints=3, worker_count=16)
  c.dataset = dataset("webdataset", image_size=224, eval_splits=(),
                      builder_kwargs=dict(source=shards, max_size=256))
  c.model = model("B/16", dtype="bfloat16", scan=True)
  c.tokenizer, c.context_length = "clip", 77
  c.evals = {}        # no labelled eval split: eval.py --tfds for zero-shot on a prepared one
  if variant == "tiny":
    c.model = cpu_towers("tiny")
    c.dataset.image_size, c.context_length, c.tokenizer = 64, 32, "byte"
    tiny(c, batch_size=32, total_steps=4, worker_count=0)
  return c


def check_variant(variant: str, known=("", "tiny")) -> str:
  """The variant (after ':' in --config) if it is one of `known`; a ValueError naming it else."""
  if variant not in known:
    raise ValueError(f"unknown config variant {variant!r}; expected one of "
                     f"{[k for k in known if k]} or none")
  return variant


def tiny(c: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """A few steps, logged and checkpointed often: the variant tests run."""
  c.update({**dict(total_steps=6, warmup_steps=2, log_every=2, checkpoint_every=3), **overrides})
  return c
