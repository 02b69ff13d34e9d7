"""DCCAE and the bimodal autoencoder against closed-form parameter counts, a float64 numpy forward
pass, a numpy CCA (symmetric inverse square roots by eigh, not mmjax's Cholesky route) and the
losses computed directly from the papers' formulas."""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.losses import bimodal_reconstruction_loss, cca_loss, dccae_loss
from mmjax.models.autoencoder import CONDITIONS, DCCAE, BimodalAutoencoder

LOGICAL_NAMES = {"embed", "mlp", "heads", "kv", "vocab", "patch", "proj", "layers", "length",
                 "classes", "modality", None}
N, DX, DY = 16, 6, 5
MODELS = {
    "dccae": DCCAE(x_dim=DX, y_dim=DY, latent_dim=3, hidden=(8, 7)),
    "bimodal": BimodalAutoencoder(x_dim=DX, y_dim=DY, hidden=(8, 7), shared_dim=4),
}


def _rand(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


X, Y = _rand(0, N, DX), _rand(1, N, DY)


@functools.cache
def _variables(name):
  """Variables of MODELS[name] with the structure and logical names of model.init, filled with
  random values by numpy (no compilation of the initialisers)."""
  shapes = jax.eval_shape(MODELS[name].init, jax.random.key(0), X, Y)
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda s: (0.5 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


def _params64(name):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), nn.unbox(_variables(name))["params"])


def _dccae_objective(params, x, y, lam, dtype=jnp.float32):
  out = MODELS["dccae"].clone(dtype=dtype).apply({"params": params}, x, y)
  return dccae_loss(out.zx, out.zy, x, y, out.x_rec, out.y_rec, lam, ridge=1e-3)


def _bimodal_objective(params, x, y, dtype=jnp.float32):
  out = MODELS["bimodal"].clone(dtype=dtype).apply({"params": params}, x, y, method="augmented")
  return bimodal_reconstruction_loss(x, y, out.x_rec, out.y_rec)


OBJECTIVES = {"dccae": lambda p, x, y, dtype=jnp.float32: _dccae_objective(p, x, y, 0.5, dtype),
              "bimodal": _bimodal_objective}


# ------------------------------------------------------------------ float64 numpy reference

def np_mlp(p, x, out=True):
  """MlpEncoder: ReLU hidden layers dense_0, dense_1, ..., then a linear `out` layer."""
  i = 0
  while f"dense_{i}" in p:
    x = np.maximum(x @ p[f"dense_{i}"]["kernel"] + p[f"dense_{i}"]["bias"], 0)
    i += 1
  return x @ p["out"]["kernel"] + p["out"]["bias"] if out else x


def np_inv_sqrt(s):
  w, v = np.linalg.eigh(s)
  return (v / np.sqrt(w)) @ v.T


def np_cca(zx, zy, ridge, k=None):
  """-(sum of the top k) singular values of Sxx^{-1/2} Sxy Syy^{-1/2}."""
  n = len(zx)
  a, b = zx - zx.mean(0), zy - zy.mean(0)
  sxx = a.T @ a / (n - 1) + ridge * np.eye(a.shape[1])
  syy = b.T @ b / (n - 1) + ridge * np.eye(b.shape[1])
  rho = np.linalg.svd(np_inv_sqrt(sxx) @ (a.T @ b / (n - 1)) @ np_inv_sqrt(syy), compute_uv=False)
  return -np.sum(rho[:k])


def np_bimodal(p, x, y, present):
  present = np.broadcast_to(np.asarray(present, np.float64), (len(x), 2))
  hx = np_mlp(p["enc_x"], x * present[:, :1], out=False)
  hy = np_mlp(p["enc_y"], y * present[:, 1:], out=False)
  h = np.maximum(np.concatenate([hx, hy], 1) @ p["shared"]["kernel"] + p["shared"]["bias"], 0)
  return h, np_mlp(p["dec_x"], h), np_mlp(p["dec_y"], h)


# ------------------------------------------------------------------ parameter counts, gradients

def _mlp(*sizes):
  return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def test_param_counts_and_logical_names():
  expected = {
      "dccae": _mlp(DX, 8, 7, 3) + _mlp(DY, 8, 7, 3) + _mlp(3, 7, 8, DX) + _mlp(3, 7, 8, DY),
      "bimodal": (_mlp(DX, 8, 7) + _mlp(DY, 8, 7) + (2 * 7 * 4 + 4)     # encoders, shared layer
                  + _mlp(4, 7, 8, DX) + _mlp(4, 7, 8, DY)),              # decoders
  }
  for name, count in expected.items():
    variables = _variables(name)
    assert sum(a.size for a in jax.tree.leaves(nn.unbox(variables))) == count, name
    for leaf in jax.tree.leaves(variables["params"],
                                is_leaf=lambda a: isinstance(a, nn.LogicallyPartitioned)):
      assert isinstance(leaf, nn.LogicallyPartitioned), name
      assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= LOGICAL_NAMES, leaf.names


@pytest.mark.parametrize("name", sorted(MODELS))
def test_grad_finite_and_nonzero(name):
  loss, grads = jax.jit(jax.value_and_grad(OBJECTIVES[name]))(
      nn.unbox(_variables(name))["params"], X, Y)
  assert np.isfinite(loss)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)) and np.any(g != 0), jax.tree_util.keystr(path)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_finite_under_jit(name):
  params = nn.unbox(_variables(name))["params"]
  loss = jax.jit(functools.partial(OBJECTIVES[name], dtype=jnp.bfloat16))(params, X, Y)
  assert loss.dtype == jnp.float32 and np.isfinite(loss)


# ------------------------------------------------------------------ DCCAE

def _dccae64():
  """float64 params, inputs, DCCAE outputs and the numpy codes f(x), g(y)."""
  p = _params64("dccae")
  x, y = X.astype(np.float64), Y.astype(np.float64)
  model = MODELS["dccae"].clone(dtype=jnp.float64)
  out = jax.jit(model.apply)({"params": p}, x, y)
  return p, x, y, out, np_mlp(p["f"], x), np_mlp(p["g"], y)


def _bimodal64():
  """float64 params, inputs and the augmented outputs (3, N, ...) of the bimodal autoencoder."""
  p = _params64("bimodal")
  x, y = X.astype(np.float64), Y.astype(np.float64)
  model = MODELS["bimodal"].clone(dtype=jnp.float64)
  out = jax.jit(functools.partial(model.apply, method="augmented"))({"params": p}, x, y)
  return p, x, y, out


def test_dccae_matches_numpy(x64):
  """Outputs: f, g encode, p decodes f(x), q decodes g(y)."""
  p, _, _, out, zx, zy = _dccae64()
  for a, b in zip(out, (zx, zy, np_mlp(p["p"], zx), np_mlp(p["q"], zy)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ bimodal autoencoder

def test_bimodal_matches_numpy_for_each_condition(x64):
  p = _params64("bimodal")
  x, y = X.astype(np.float64), Y.astype(np.float64)
  apply = jax.jit(MODELS["bimodal"].clone(dtype=jnp.float64).apply)
  per_example = np.array(CONDITIONS)[np.arange(N) % 3]            # (N, 2) mixed conditions
  for present in (*CONDITIONS, per_example):
    out = apply({"params": p}, x, y, present)
    for a, b in zip(out, np_bimodal(p, x, y, present), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_bimodal_reconstructs_both_from_either_alone():
  """Shapes of both reconstructions in every condition, and a missing modality has no influence:
  with x only the outputs do not change when y does, and conversely."""
  params = nn.unbox(_variables("bimodal"))
  apply = jax.jit(MODELS["bimodal"].apply)
  x2, y2 = _rand(2, N, DX), _rand(3, N, DY)
  for present in CONDITIONS:
    out = apply(params, X, Y, present)
    assert out.shared.shape == (N, 4) and out.x_rec.shape == (N, DX)
    assert out.y_rec.shape == (N, DY)
  for a, b in zip(apply(params, X, Y, (1.0, 0.0)), apply(params, X, y2, (1.0, 0.0))):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(apply(params, X, Y, (0.0, 1.0)), apply(params, x2, Y, (0.0, 1.0))):
    np.testing.assert_array_equal(a, b)
  both, only_x = apply(params, X, Y, (1.0, 1.0)), apply(params, X, Y, (1.0, 0.0))
  assert np.max(np.abs(both.x_rec - only_x.x_rec)) > 1e-3          # y is used when present


def test_bimodal_augmented_stacks_the_three_conditions(x64):
  """augmented() stacks the three conditions: each slice matches a separate numpy pass."""
  p, x, y, out = _bimodal64()
  assert out.x_rec.shape == (3, N, DX) and out.y_rec.shape == (3, N, DY)
  for c, present in enumerate(CONDITIONS):
    for a, b in zip(out, np_bimodal(p, x, y, present), strict=True):
      np.testing.assert_allclose(a[c], b, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ loss values, jitted and not

class LossValuesTest(chex.TestCase):
  """mmjax.losses.dccae_loss and bimodal_reconstruction_loss against the papers' formulas computed
  in float64 numpy, with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_dccae_loss_matches_numpy(self):
    """numpy CCA plus the reconstruction errors,
    lam / n * sum_i (||x_i - p(f(x_i))||^2 + ||y_i - q(g(y_i))||^2)."""
    with jax.enable_x64(True):
      _, x, y, out, zx, zy = _dccae64()
      rec = (np.sum((x - out.x_rec) ** 2) + np.sum((y - out.y_rec) ** 2)) / N
      for lam, objective, k in ((0.0, "trace", None), (0.3, "trace", None), (2.0, "topk", 2)):
        loss = self.variant(functools.partial(dccae_loss, lam=lam, objective=objective, k=k,
                                              ridge=1e-3))
        got = loss(out.zx, out.zy, x, y, out.x_rec, out.y_rec)
        np.testing.assert_allclose(got, np_cca(zx, zy, 1e-3, k) + lam * rec, rtol=1e-10)
        if lam == 0:                                              # lam = 0 is Deep CCA
          np.testing.assert_allclose(got, cca_loss(out.zx, out.zy, ridge=1e-3), rtol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bimodal_loss_averages_the_three_conditions(self):
    """The mean over the three conditions of the per-example squared error of both
    reconstructions, computed here from three separate numpy passes."""
    with jax.enable_x64(True):
      p, x, y, out = _bimodal64()
      expected = 0.0
      for present in CONDITIONS:
        ref = np_bimodal(p, x, y, present)
        expected += (np.sum((x - ref[1]) ** 2) + np.sum((y - ref[2]) ** 2)) / N / 3
      got = self.variant(bimodal_reconstruction_loss)(x, y, out.x_rec, out.y_rec)
      np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_errors_name_the_bad_input():
  params = nn.unbox(_variables("bimodal"))
  with pytest.raises(ValueError, match=r"present must have shape \(2,\) or \(16, 2\)"):
    MODELS["bimodal"].apply(params, X, Y, np.ones((N, 3)))
  with pytest.raises(ValueError, match="same batch size"):
    MODELS["bimodal"].apply(params, X, Y[:-1])
  out = MODELS["dccae"].apply(nn.unbox(_variables("dccae")), X, Y)
  with pytest.raises(ValueError, match="do not match"):
    dccae_loss(out.zx, out.zy, X, Y[:, :-1], out.x_rec, out.y_rec, 1.0)
  plain = MODELS["bimodal"].apply(params, X, Y)
  with pytest.raises(ValueError, match="augmented"):
    bimodal_reconstruction_loss(X, Y, plain.x_rec, plain.y_rec)
