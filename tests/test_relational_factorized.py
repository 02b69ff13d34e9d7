"""Relational and factorised (shared + unique) objectives against float64 numpy references; jitted
and un-jitted (chex variants) and vmapped over a batch of problems."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from mmjax import losses
from tests import reference as ref


def np_relational(x, y, scale, kind):
  b = len(x)
  sx, sy = x @ x.T, y @ y.T
  if kind == "mse":
    return np.mean([(sx[i, j] - sy[i, j]) ** 2 for i in range(b) for j in range(b) if i != j])
  total = 0.0
  for i in range(b):
    others = [j for j in range(b) if j != i]
    px = np.exp(scale * sx[i, others] - ref.logsumexp(scale * sx[i, others]))
    py = np.exp(scale * sy[i, others] - ref.logsumexp(scale * sy[i, others]))
    total += 0.5 * (np.sum(px * np.log(px / py)) + np.sum(py * np.log(py / px)))
  return total / b


def np_orthogonality(s, u):
  return np.sum((s.T @ u) ** 2) / len(s) ** 2


def np_factorized(sa, sb, ua, ua2, ub, ub2, scale, unique_weight, orthogonality_weight):
  return (ref.clip(sa, sb, scale)
          + unique_weight * (ref.nt_xent(ua, ua2, scale) + ref.nt_xent(ub, ub2, scale))
          + orthogonality_weight * (np_orthogonality(sa, ua) + np_orthogonality(sb, ub)))


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_relational_against_numpy(kind, x64):
  del x64
  rng = np.random.default_rng(0)
  x = ref.normalize(rng.normal(size=(9, 5)))
  y = ref.normalize(rng.normal(size=(9, 7)))  # the modalities may have different widths
  ours, g = jax.jit(jax.value_and_grad(
      lambda x: losses.relational_loss(x, jnp.asarray(y), scale=3.0, kind=kind)))(jnp.asarray(x))
  np.testing.assert_allclose(ours, np_relational(x, y, 3.0, kind), rtol=1e-10)
  v = rng.normal(size=x.shape)
  h = 1e-6
  fd = (np_relational(x + h * v, y, 3.0, kind) - np_relational(x - h * v, y, 3.0, kind)) / (2 * h)
  np.testing.assert_allclose(np.sum(np.asarray(g) * v), fd, rtol=1e-6)


def test_relational_is_zero_for_identical_structure_and_rejects_bad_kind():
  rng = np.random.default_rng(1)
  x = jnp.asarray(ref.normalize(rng.normal(size=(6, 4))), jnp.float32)
  q, _ = np.linalg.qr(rng.normal(size=(4, 4)))  # a rotation keeps every within-modality similarity
  y = x @ jnp.asarray(q, jnp.float32)
  kinds = ("kl", "mse")
  for value in jax.jit(lambda x, y: [losses.relational_loss(x, y, kind=k) for k in kinds])(x, y):
    assert abs(float(value)) < 1e-5
  with pytest.raises(ValueError, match="'cosine'"):
    losses.relational_loss(x, y, kind="cosine")
  with pytest.raises(ValueError, match=r"\(6, 4\) and \(5, 4\)"):
    losses.relational_loss(x, y[:5])


def test_factorized_against_numpy(x64):
  del x64
  rng = np.random.default_rng(2)
  sa, sb = ref.random_pairs(rng, 8, 6)
  ua, ua2 = ref.random_pairs(rng, 8, 6)
  ub, ub2 = ref.random_pairs(rng, 8, 6)
  want = np_factorized(sa, sb, ua, ua2, ub, ub2, 5.0, 0.5, 0.1)
  args = [jnp.asarray(a) for a in (sa, sb, ua, ua2, ub, ub2)]
  ours = jax.jit(lambda *a: losses.factorized_loss(*a, 5.0, unique_weight=0.5,
                                                   orthogonality_weight=0.1))(*args)
  np.testing.assert_allclose(ours, want, rtol=1e-10)


def test_orthogonality_loss():
  e = jnp.eye(6)
  assert losses.orthogonality_loss(e[:, :3], e[:, 3:]) == 0.0  # disjoint column spaces
  rng = np.random.default_rng(3)
  s, u = rng.normal(size=(10, 3)), rng.normal(size=(10, 4))
  np.testing.assert_allclose(losses.orthogonality_loss(jnp.asarray(s, jnp.float32),
                                                       jnp.asarray(u, jnp.float32)),
                             np_orthogonality(s, u), rtol=1e-5)


VARIANT_CASES = {  # name -> (loss(*args), its float64 reference(*args), args of one problem(rng))
    **{f"relational_{kind}": (
        lambda x, y, kind=kind: losses.relational_loss(x, y, scale=3.0, kind=kind),
        lambda x, y, kind=kind: np_relational(x, y, 3.0, kind),
        lambda rng: (ref.normalize(rng.normal(size=(9, 5))),
                     ref.normalize(rng.normal(size=(9, 7)))))
       for kind in ("kl", "mse")},
    "orthogonality": (losses.orthogonality_loss, np_orthogonality,
                      lambda rng: (rng.normal(size=(10, 3)), rng.normal(size=(10, 4)))),
    "factorized": (
        lambda *a: losses.factorized_loss(*a, 5.0, unique_weight=0.5, orthogonality_weight=0.1),
        lambda *a: np_factorized(*a, 5.0, 0.5, 0.1),
        lambda rng: sum((ref.random_pairs(rng, 12, 6) for _ in range(3)), ())),
}


class VariantsTest(chex.TestCase):
  """Each loss jitted and un-jitted against its float64 reference, and vmapped over a leading axis
  of problems against the loop over them."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*((name, name) for name in sorted(VARIANT_CASES)))
  def test_reference_value_and_vmap(self, name):
    ours, theirs, make_args = VARIANT_CASES[name]
    rng = np.random.default_rng(7)
    problems = [make_args(rng) for _ in range(2)]
    with jax.enable_x64(True):
      loss = self.variant(ours)
      each = [loss(*map(jnp.asarray, args)) for args in problems]
      for value, args in zip(each, problems):
        np.testing.assert_allclose(value, theirs(*args), rtol=1e-10)
      stacked = [jnp.asarray(np.stack(arrays)) for arrays in zip(*problems)]  # (2, ...) each
      np.testing.assert_allclose(self.variant(jax.vmap(ours))(*stacked), each, rtol=1e-12)
