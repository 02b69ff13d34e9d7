"""The check every loss's chex.variants test runs (test_contrastive, test_correlation,
test_sharded_losses)."""
import jax
import jax.numpy as jnp
import numpy as np


def value_and_vmap(variant, ours, theirs, xs, ys, rtol):
  """ours under `variant` (jitted or not) on each problem (x, y) of the stacked xs, ys (P, n, d)
  equals theirs (a float64 reference) within rtol, and ours vmapped over the P problems equals
  the loop over them."""
  with jax.enable_x64(True):
    loss = variant(ours)
    each = [loss(jnp.asarray(x), jnp.asarray(y)) for x, y in zip(xs, ys)]
    for value, x, y in zip(each, xs, ys):
      np.testing.assert_allclose(value, theirs(x, y), rtol=rtol)
    batched = variant(jax.vmap(ours))(jnp.asarray(xs), jnp.asarray(ys))
    np.testing.assert_allclose(batched, each, rtol=1e-12)
