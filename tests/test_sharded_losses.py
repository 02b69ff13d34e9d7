"""Global-negative losses on an 8-device mesh and the memory-bounded (chunked, ring) forms.

The single-device loss on the whole batch is the reference: sharded and chunked forms must match its
value and gradient (image, text, scale, bias) to 1e-5. Everything is jitted (compiling a loss once
costs less than running it op by op) and each reference is computed once per input.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax import losses
from tests import loss_checks, reference as ref

BIAS = -3.0

SINGLE = {
    "clip": lambda x, y, s, b: losses.clip_loss(x, y, s),
    "siglip": lambda x, y, s, b: losses.siglip_loss(x, y, s, b),
}
SHARDED = {  # name -> (per-device loss, its single-device reference)
    "clip": (lambda x, y, s, b: losses.clip_loss(x, y, s, axis_name="data"), "clip"),
    "chunked_clip": (lambda x, y, s, b: losses.chunked_clip_loss(x, y, s, block_size=2,
                                                                 axis_name="data"), "clip"),
    "siglip": (lambda x, y, s, b: losses.siglip_loss(x, y, s, b, axis_name="data"), "siglip"),
    "siglip_ring": (lambda x, y, s, b: losses.siglip_ring_loss(x, y, s, b, axis_name="data"),
                    "siglip"),
}
ARGNUMS = (0, 1, 2, 3)


def _inputs(b, d=16, seed=0):
  x, y = ref.random_pairs(np.random.default_rng(seed), b, d)
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.float32(7.5), jnp.float32(BIAS)


@functools.cache
def _reference(ref_name, b, seed):
  """The single-device value and gradient of SINGLE[ref_name] on _inputs(b, seed=seed), jitted."""
  return jax.jit(jax.value_and_grad(SINGLE[ref_name], argnums=ARGNUMS))(*_inputs(b, seed=seed))


def _assert_close_tree(got, want, tol=1e-5):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_sharded_loss_and_gradient_equal_single_device(name, mesh8):
  fn, ref_name = SHARDED[name]
  args = _inputs(40)  # 5 rows per device
  sharded = jax.shard_map(fn, mesh=mesh8, in_specs=(P("data"), P("data"), P(), P()), out_specs=P())
  value, grads = jax.jit(jax.value_and_grad(sharded, argnums=ARGNUMS))(*args)
  want_value, want_grads = _reference(ref_name, 40, 0)
  np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6)
  _assert_close_tree(grads, want_grads)


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_per_device_gradients_inside_shard_map(name, mesh8):
  """The train-step pattern: value_and_grad inside shard_map, local shards in, local grads out.
  The replicated scale and bias get the sum of every device's contribution (their implicit
  replicated->varying cast transposes to a psum)."""
  fn, ref_name = SHARDED[name]
  args = _inputs(24, seed=1)
  step = jax.shard_map(jax.value_and_grad(fn, argnums=ARGNUMS), mesh=mesh8,
                       in_specs=(P("data"), P("data"), P(), P()),
                       out_specs=(P(), (P("data"), P("data"), P(), P())))
  value, grads = jax.jit(step)(*args)
  want_value, want_grads = _reference(ref_name, 24, 1)
  np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6)
  _assert_close_tree(grads, want_grads)


def test_sharded_clip_is_not_the_mean_of_local_losses(mesh8):
  """Guards against a loss that silently uses only local negatives."""
  local = jax.shard_map(lambda x, y, s, b: jax.lax.pmean(losses.clip_loss(x, y, s), "data"),
                        mesh=mesh8, in_specs=(P("data"), P("data"), P(), P()), out_specs=P())
  assert abs(float(jax.jit(local)(*_inputs(40))) - float(_reference("clip", 40, 0)[0])) > 0.1


@pytest.mark.parametrize("batch,block", [(1, 4), (7, 4), (33, 8), (100, 16), (64, 64), (50, 128)])
def test_chunked_clip_equals_naive(batch, block):
  args = _inputs(batch, d=8, seed=batch)[:3]
  chunked = functools.partial(losses.chunked_clip_loss, block_size=block)
  (value, grads), (want_value, want_grads) = jax.jit(lambda *a: (  # both in one compile
      jax.value_and_grad(chunked, argnums=(0, 1, 2))(*a),
      jax.value_and_grad(losses.clip_loss, argnums=(0, 1, 2))(*a)))(*args)
  np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6)
  _assert_close_tree(grads, want_grads)


def test_chunked_clip_under_jit_with_traced_scale():
  x, y, s, _ = _inputs(20)
  f = jax.jit(functools.partial(losses.chunked_clip_loss, block_size=8))
  naive = jax.jit(losses.clip_loss)
  for scale in (s, 2 * s):  # one compilation, the scale is traced
    np.testing.assert_allclose(f(x, y, scale), naive(x, y, scale), rtol=1e-5, atol=1e-6)


def _temp_bytes(loss_fn, b, d=64):
  x = jax.ShapeDtypeStruct((b, d), jnp.float32)
  s = jax.ShapeDtypeStruct((), jnp.float32)
  step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))
  return step.lower(x, x, s).compile().memory_analysis().temp_size_in_bytes


def test_chunked_memory_grows_linearly_naive_quadratically():
  sizes = (512, 1024, 2048, 4096)
  naive = [_temp_bytes(losses.clip_loss, b) for b in sizes]
  chunked = [_temp_bytes(functools.partial(losses.chunked_clip_loss, block_size=128), b)
             for b in sizes]
  naive_growth = [b / a for a, b in zip(naive, naive[1:])]
  chunked_growth = [b / a for a, b in zip(chunked, chunked[1:])]
  assert all(g > 3.5 for g in naive_growth), (naive, naive_growth)      # ~4x per doubling
  assert all(g < 2.3 for g in chunked_growth), (chunked, chunked_growth)  # ~2x per doubling
  # at B=4096 the naive loss holds several B x B float32 buffers (64 MiB each)
  assert naive[-1] > 4096 * 4096 * 4 and chunked[-1] < naive[-1] / 8


class SiglipRingVariantsTest(chex.TestCase):
  """siglip_ring_loss (inside shard_map over the 8 devices) jitted and un-jitted against the float64
  SigLIP reference, and vmapped over a leading axis of problems against the loop over them."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_reference_value_and_vmap(self):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    ring = jax.shard_map(lambda x, y: losses.siglip_ring_loss(x, y, 7.5, BIAS, axis_name="data"),
                         mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())
    rng = np.random.default_rng(6)
    xs, ys = map(np.stack, zip(*(ref.random_pairs(rng, 16, 4) for _ in range(2))))  # (2, 16, 4)
    loss_checks.value_and_vmap(self.variant, ring, lambda x, y: ref.siglip(x, y, 7.5, BIAS), xs,
                               ys, rtol=1e-10)
