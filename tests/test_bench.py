"""The benchmark scripts on a one-layer model: they run, and their analytic FLOP count agrees with
XLA's count of the compiled train step (the independent reference)."""
import pathlib
import sys

import jax
import jax.numpy as jnp
import pytest

from mmjax.models.mtag_graph import num_edge_types
from mmjax.models.two_tower import PRESETS, two_tower

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench"))
import _common as common  # noqa: E402  pylint: disable=wrong-import-position
import compare_openclip  # noqa: E402  pylint: disable=wrong-import-position
import eval_throughput  # noqa: E402  pylint: disable=wrong-import-position
import sequence_models  # noqa: E402  pylint: disable=wrong-import-position
import train_throughput  # noqa: E402  pylint: disable=wrong-import-position

MICRO = dict(image_size=32, embed_dim=32,
             image=dict(patch_size=8, width=64, depth=1, num_heads=2, mlp_dim=256),
             text=dict(vocab_size=259, context_length=16, width=64, depth=1, num_heads=2,
                       mlp_dim=256))


@pytest.fixture
def micro(monkeypatch):
  """The 'micro' preset, with the benchmarks' random parameters and batches drawn by 'rbg' keys:
  nothing here depends on their values, and compiling threefry's random bits (the default) costs
  ~1.5 s of CPU per program."""
  monkeypatch.setitem(PRESETS, "micro", MICRO)
  default_impl = jax.config.jax_default_prng_impl
  jax.config.update("jax_default_prng_impl", "rbg")
  yield "micro"
  jax.config.update("jax_default_prng_impl", default_impl)


def test_transformer_flops_closed_form():
  # One block, T=2, D=1, M=1: projections 8, MLP 4 per token; attention 4 * T^2 * D = 16.
  assert common.transformer_flops(2, 1, 1, 1) == 2 * 12 + 16
  # ViT-B/16 + CLIP text at batch 256: OpenCLIP's published count is 123.8 GFLOP per pair.
  assert common.two_tower_flops(PRESETS["B/16"], 256)["train"] / 1e9 == pytest.approx(123.8,
                                                                                       rel=0.01)


def test_train_step_flops_and_timing(micro):
  config = train_throughput.bench_config(micro, 8, dtype="float32")
  r = train_throughput.run(config, steps=1, repeats=1, warmup=1)
  # XLA also counts layer norms, softmax, GELU and AdamW: a few % above the matmul-only count.
  assert r["analytic_flops"] <= r["compiled_flops"] <= 1.15 * r["analytic_flops"]
  assert r["images_s"] > 0 and r["step_s"] > 0 and r["compiled_bytes"] > 0
  cells = train_throughput.row(micro, 8, "default", r, peak_tflops=1.0)
  assert len(cells) == len(train_throughput.HEADER)


def test_eval_paths(micro):
  results = eval_throughput.run(micro, 4, dtype=jnp.float32, classes=10, ranking=8, repeats=1)
  assert set(results) == {"zero-shot", "retrieval", "ranking"}
  for r in results.values():
    assert r["seconds"] > 0
    assert 0.9 * r["analytic_flops"] <= r["compiled_flops"] <= 1.3 * r["analytic_flops"]


def test_batch_sizes():
  assert train_throughput.batch_sizes("", ["B/32", "B/16"]) == [512, 256]
  assert train_throughput.batch_sizes("64", ["B/32", "B/16"]) == [64, 64]
  with pytest.raises(ValueError, match="one size or one per preset"):
    train_throughput.batch_sizes("1,2,3", ["B/32", "B/16"])


def test_openclip_model_has_the_preset_architecture():
  """Where OpenCLIP is installed: its CLIP built from a preset has exactly mmjax's parameters."""
  pytest.importorskip("open_clip")
  cfg = PRESETS["tiny"]
  s, n = cfg["image_size"], cfg["text"]["context_length"]
  shapes = jax.eval_shape(two_tower("tiny").init, jax.random.key(0), jnp.zeros((1, s, s, 3)),
                          jnp.zeros((1, n), jnp.int32))
  ours = sum(x.size for x in jax.tree.leaves(shapes))
  theirs = sum(p.numel() for p in compare_openclip.openclip_model("tiny").parameters())
  assert theirs == ours


def test_sequence_models_step_time_on_the_tiny_config():
  # the --step_ms table's cell: a training step of the tiny MTAG config, timed after compiling
  ms = sequence_models.step_ms("mtag,tiny", rounds=1, steps=1)
  assert 0 < ms < 60_000
  assert sequence_models.parameters("mtag,tiny") > 0


def test_sequence_models_set_reaches_the_timed_config():
  # --set applies to --step_ms's configs as train.py applies --config.KEY=VALUE: MTAG's edge-type
  # biases are (edge types, heads) in each layer (the attention vectors split the width over the
  # heads, so their size stays), so the tiny config's one layer over three streams loses exactly
  # num_edge_types(3) parameters per head; a key the config lacks is an error naming it
  tiny = sequence_models.load_config("mtag,tiny")
  assert (tiny.model.num_heads, tiny.model.depth, len(tiny.model.streams)) == (2, 1, 3)
  assert sequence_models.load_config("mtag,tiny", ["model.num_heads=1"]).model.num_heads == 1
  assert (sequence_models.parameters("mtag,tiny")
          - sequence_models.parameters("mtag,tiny", ["model.num_heads=1"])) == num_edge_types(3)
  with pytest.raises(AttributeError, match="num_headz"):
    sequence_models.load_config("mtag,tiny", ["model.num_headz=1"])
