"""Contrastive losses against float64 numpy references (tests/reference.py), value and gradient;
jitted and un-jitted (chex variants) and vmapped over a batch of problems."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from mmjax import losses
from tests import loss_checks, reference as ref


def directional_fd(f, args, i, rng, h=1e-6):
  """Central finite difference of the float64 numpy function f along a random direction of args[i]."""
  v = rng.normal(size=np.shape(args[i]))
  plus = list(args)
  minus = list(args)
  plus[i] = args[i] + h * v
  minus[i] = args[i] - h * v
  return (f(*plus) - f(*minus)) / (2 * h), v


CASES = {
    "clip": (lambda x, y, s: losses.clip_loss(x, y, s), ref.clip),
    "siglip": (lambda x, y, s: losses.siglip_loss(x, y, s, -3.0),
               lambda x, y, s: ref.siglip(x, y, s, -3.0)),
    "nt_xent": (lambda x, y, s: losses.nt_xent_loss(x, y, s), ref.nt_xent),
    "hinge": (lambda x, y, s: losses.hinge_loss(x, y, margin=0.2),
              lambda x, y, s: ref.hinge(x, y, 0.2, False)),
    "hinge_hardest": (lambda x, y, s: losses.hinge_loss(x, y, margin=0.2, hardest_negative=True),
                      lambda x, y, s: ref.hinge(x, y, 0.2, True)),
    "chunked_clip": (lambda x, y, s: losses.chunked_clip_loss(x, y, s, block_size=5), ref.clip),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_gradient_float64(name, x64):
  del x64
  ours, theirs = CASES[name]
  rng = np.random.default_rng(0)
  x, y = ref.random_pairs(rng, 12, 6)
  scale = 4.5
  value, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2)))(
      jnp.asarray(x), jnp.asarray(y), jnp.float64(scale))
  np.testing.assert_allclose(value, theirs(x, y, scale), rtol=1e-10)
  for i in range(3):
    fd, v = directional_fd(theirs, (x, y, scale), i, rng)
    np.testing.assert_allclose(np.sum(np.asarray(grads[i]) * v), fd, rtol=1e-6, atol=1e-8)


SUPCON_LABELS = np.arange(24) % 13   # 24 rows: labels 11 and 12 once, so without a positive
VARIANT_CASES = {  # name -> (loss(x, y), its float64 numpy reference(x, y))
    **{name: (lambda x, y, f=ours: f(x, y, 4.5), lambda x, y, f=theirs: f(x, y, 4.5))
       for name, (ours, theirs) in CASES.items()},
    "supcon": (lambda x, y: losses.supcon_loss(jnp.concatenate([x, y]), SUPCON_LABELS, 3.0),
               lambda x, y: ref.supcon(np.concatenate([x, y]), SUPCON_LABELS, 3.0)),
}


class VariantsTest(chex.TestCase):
  """Each loss jitted and un-jitted against its float64 reference, and vmapped over a leading axis
  of problems against the loop over them."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*((name, name) for name in sorted(VARIANT_CASES)))
  def test_reference_value_and_vmap(self, name):
    ours, theirs = VARIANT_CASES[name]
    rng = np.random.default_rng(5)
    xs, ys = map(np.stack, zip(*(ref.random_pairs(rng, 12, 6) for _ in range(2))))  # (2, 12, 6)
    loss_checks.value_and_vmap(self.variant, ours, theirs, xs, ys, rtol=1e-10)


def test_float32_matches_float64_reference():
  rng = np.random.default_rng(1)
  x, y = ref.random_pairs(rng, 64, 32)
  xf, yf = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  # un-jitted: jitted, XLA's fusion puts the float32 CLIP value 1.05e-5 (relative) from float64 here
  np.testing.assert_allclose(losses.clip_loss(xf, yf, 1 / 0.07), ref.clip(x, y, 1 / 0.07), rtol=1e-5)
  np.testing.assert_allclose(losses.siglip_loss(xf, yf, 10.0, -10.0), ref.siglip(x, y, 10.0, -10.0),
                             rtol=1e-5)


def test_supcon_against_reference_with_anchors_without_positives(x64):
  del x64
  rng = np.random.default_rng(2)
  z = ref.normalize(rng.normal(size=(10, 5)))
  labels = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 5])  # labels 1, 3 and 5 have no positive
  ours, g = jax.jit(jax.value_and_grad(lambda z: losses.supcon_loss(z, jnp.asarray(labels), 3.0)))(
      jnp.asarray(z))
  np.testing.assert_allclose(ours, ref.supcon(z, labels, 3.0), rtol=1e-10)
  fd, v = directional_fd(lambda z: ref.supcon(z, labels, 3.0), (z,), 0, rng)
  np.testing.assert_allclose(np.sum(np.asarray(g) * v), fd, rtol=1e-6)


def test_supcon_with_one_label_per_pair_is_nt_xent(x64):
  del x64
  rng = np.random.default_rng(3)
  a, b = ref.random_pairs(rng, 8, 4)

  @jax.jit
  def run(a, b):
    z = jnp.concatenate([a, b])
    labels = jnp.concatenate([jnp.arange(8), jnp.arange(8)])
    single = jax.value_and_grad(lambda z: losses.supcon_loss(z, jnp.arange(8), 2.0))(z[:8])
    return losses.supcon_loss(z, labels, 2.0), losses.nt_xent_loss(a, b, 2.0), single

  supcon, nt_xent, (single, single_grad) = run(jnp.asarray(a), jnp.asarray(b))
  np.testing.assert_allclose(supcon, nt_xent, rtol=1e-12)
  # no anchor has a positive: the loss is defined as 0, with finite gradients
  assert single == 0.0 and np.all(np.isfinite(single_grad))


def test_perfect_alignment_limits():
  """Orthonormal, perfectly paired embeddings: CLIP tends to 0 as the scale grows, hinge is 0 for
  a margin below the cosine gap of 1."""
  clip, hinge, hardest = jax.jit(lambda x: (
      losses.clip_loss(x, x, 100.0), losses.hinge_loss(x, x, margin=0.5),
      losses.hinge_loss(x, x, margin=1.5, hardest_negative=True)))(jnp.eye(8, dtype=jnp.float32))
  assert clip < 1e-6
  assert hinge == 0.0
  assert hardest == pytest.approx(1.0)


@pytest.mark.parametrize("fn", [
    lambda x, y: losses.clip_loss(x, y, 100.0),
    lambda x, y: losses.siglip_loss(x, y, 100.0, -10.0),
    lambda x, y: losses.chunked_clip_loss(x, y, 100.0, block_size=16),
    lambda x, y: losses.hinge_loss(x, y, hardest_negative=True),
    lambda x, y: losses.nt_xent_loss(x, y, 100.0),
    lambda x, y: losses.supcon_loss(jnp.concatenate([x, y]), jnp.arange(2 * x.shape[0]) % 7, 100.0),
])
def test_bf16_inputs_give_finite_loss_and_gradient_at_scale_100(fn):
  rng = np.random.default_rng(4)
  x, y = ref.random_pairs(rng, 48, 32, noise=2.0)
  xb, yb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
  # one compile: the bf16 value and gradient, and the float32 value of the same (rounded) inputs
  (value, grads), f32 = jax.jit(lambda x, y: (
      jax.value_and_grad(fn, argnums=(0, 1))(x, y),
      fn(x.astype(jnp.float32), y.astype(jnp.float32))))(xb, yb)
  assert value.dtype == jnp.float32 and np.isfinite(value)
  assert all(g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))
             for g in grads)
  # and close to the float32 value: bf16 rounds the inputs, the logits are accumulated in float32
  np.testing.assert_allclose(value, f32, rtol=1e-3)


def test_shape_errors_name_the_shapes():
  x = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
    losses.clip_loss(x, jnp.zeros((5, 3)), 1.0)
  with pytest.raises(ValueError, match="labels"):
    losses.supcon_loss(x, jnp.zeros((3,), jnp.int32), 1.0)
  with pytest.raises(ValueError, match="block_size"):
    losses.chunked_clip_loss(x, x, 1.0, block_size=0)
  with pytest.raises(ValueError, match="axis_name"):
    losses.siglip_ring_loss(x, x, 1.0, 0.0, axis_name=None)
