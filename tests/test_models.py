"""Encoders and the two-tower model: parameter counts, numerics against numpy, scan/remat/padding
equivalences, LiT locking, and sharded initialisation on the 8-device mesh.

Compilation is where these tests spend their time (on the CPU a tiny ViT's forward + backward
takes about a second to compile, and running it op by op, un-jitted, several times that). So
parameter counts come from jax.eval_shape, each test jits its whole computation once (fixtures
compile what several tests share once), and checks that hold for any parameter values run on seeded
random variables in the shapes eval_shape gives, instead of compiling an init.
"""
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import parallel
from mmjax.models.mlp import MlpEncoder
from mmjax.models.text import TextTransformer
from mmjax.models.transformer import Attention, Encoder
from mmjax.models.two_tower import PRESETS, TwoTower, two_tower
from mmjax.models.vit import ViT

TINY_VIT = dict(patch_size=4, width=16, depth=2, num_heads=2, mlp_dim=24)
TINY_TEXT = dict(vocab_size=40, context_length=9, width=16, depth=2, num_heads=2, mlp_dim=24)
KEY = jax.random.key(0)


def n_params(variables):
  return sum(x.size for x in jax.tree.leaves(nn.unbox(variables)))


def _abstract(module, *args):
  """module.init's variables as ShapeDtypeStructs: traced, never compiled or run."""
  return jax.eval_shape(module.init, KEY, *args)


def _random_variables(module, *args, seed=0):
  """Seeded numpy random values in the shapes and dtypes of module.init's variables, for checks that
  hold for any parameter values: compiling an init costs seconds of CPU here (jax's threefry random
  bits alone ~1.5 s per program), which is also why inputs come from numpy. Matrices get std
  1/sqrt(fan-in); vectors (biases, norm scales) std 0.5, so no bias is zero."""
  rng = np.random.default_rng(seed)

  def fill(s):
    std = 0.5 if len(s.shape) < 2 else 1 / np.sqrt(np.prod(s.shape[:-1]))
    return jnp.asarray(std * rng.normal(size=s.shape), s.dtype)
  return jax.tree.map(fill, nn.unbox(_abstract(module, *args)))


def block_params(d, m):
  return 4 * (d * d + d) + (2 * d * m + m + d) + 4 * d   # attention, mlp, two layer norms


def vit_params(p, c, d, depth, m, n_patches, pool):
  extra = {"cls": d + (n_patches + 1) * d, "gap": n_patches * d,
           "map": n_patches * d + 2 * d + d + 4 * (d * d + d) + 2 * d + (2 * d * m + m + d)}[pool]
  return p * p * c * d + extra + 2 * d + depth * block_params(d, m) + 2 * d


def _images(b=3, size=16, seed=0):
  return np.random.default_rng(seed).normal(size=(b, size, size, 3)).astype(np.float32)


def _tokens(b=3, seed=0):
  toks = np.random.default_rng(seed).integers(1, 38, size=(b, 9))
  for row, eot in enumerate((3, 8, 5)[:b]):
    toks[row, eot], toks[row, eot + 1:] = 39, 0
  return jnp.asarray(toks)


VIT_POOLS = ("cls", "gap", "map")


@pytest.fixture(scope="module")
def vit_grads():
  """{pool: gradient of sum(ViT(images)^2) w.r.t. its variables}: the three pools in one compile
  (the gradient of a sum over independent models is each model's own gradient)."""
  images = _images()
  vits = {pool: ViT(**TINY_VIT, pool=pool) for pool in VIT_POOLS}
  variables = {pool: _random_variables(vit, images) for pool, vit in vits.items()}
  loss = lambda vs: sum(jnp.sum(vit.apply(vs[pool], images) ** 2) for pool, vit in vits.items())
  return jax.jit(jax.grad(loss))(variables)


@pytest.mark.parametrize("pool", VIT_POOLS)
def test_vit_param_count_and_gradient(pool, vit_grads):
  assert n_params(_abstract(ViT(**TINY_VIT, pool=pool), _images())) == vit_params(
      4, 3, 16, 2, 24, 16, pool)
  assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(vit_grads[pool]))


def test_text_param_count_gradient_and_causal_eot_pooling():
  text = TextTransformer(**TINY_TEXT, eot_token_id=39)
  by_largest_id = TextTransformer(**TINY_TEXT)  # eot_token_id=None: pools at the largest id
  toks = _tokens()
  changed = toks.at[0, 5:].set(7)
  assert n_params(_abstract(text, toks)) == 40 * 16 + 9 * 16 + 2 * block_params(16, 24) + 2 * 16

  def loss(v):
    out = text.apply(v, toks)
    return jnp.sum(out ** 2), out

  @jax.jit
  def run(v):
    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(v)
    return out, text.apply(v, changed), by_largest_id.apply(v, toks), grads

  out, out_changed, out_largest, grads = run(_random_variables(text, toks))
  assert out.shape == (3, 16)
  # tokens after the end-of-text token cannot change the pooled feature (causal attention)
  np.testing.assert_allclose(out_changed[0], out[0], atol=1e-6)
  # eot_token_id=None pools at the largest id, which is 39 here too
  np.testing.assert_allclose(out_largest, out, atol=1e-6)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_mlp_encoder_param_count():
  enc = MlpEncoder(hidden=(32, 16), out_dim=8, norm=True)
  variables = _abstract(enc, jax.ShapeDtypeStruct((4, 10), jnp.float32))
  assert n_params(variables) == (10 * 32 + 32 + 2 * 32) + (32 * 16 + 16 + 2 * 16) + (16 * 8 + 8)
  with pytest.raises(ValueError, match=r"\(4, 2, 5\)"):
    _abstract(enc, jax.ShapeDtypeStruct((4, 2, 5), jnp.float32))


@pytest.mark.parametrize("preset,count", [("B/32", 151_277_313), ("B/16", 149_620_737),
                                          ("L/14", 427_616_513)])
def test_presets_match_openai_clip_parameter_counts(preset, count):
  """OpenAI's released CLIP models have exactly these counts (OpenCLIP's model profile)."""
  model = two_tower(preset)
  size, length = PRESETS[preset]["image_size"], PRESETS[preset]["text"]["context_length"]
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)),
                            jnp.zeros((1, length), jnp.int32))
  assert n_params(abstract) == count


def test_attention_against_float64_numpy(x64):
  del x64
  att = Attention(num_heads=2, dtype=jnp.float64, param_dtype=jnp.float64)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 8)))   # float64
  ctx = jnp.asarray(np.random.default_rng(2).normal(size=(2, 7, 6)))
  variables = _random_variables(att, x, ctx)  # float64, with non-zero biases
  p = jax.tree.map(np.asarray, variables["params"])
  q = np.einsum("btd,dnh->btnh", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("bsd,dnh->bsnh", ctx, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("bsd,dnh->bsnh", ctx, p["value"]["kernel"]) + p["value"]["bias"]
  logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(4)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  o = np.einsum("bnts,bsnh->btnh", w, v)
  want = np.einsum("btnh,nhd->btd", o, p["out"]["kernel"]) + p["out"]["bias"]
  lengths = jnp.array([3, 7])  # padded keys are ignored: the same as slicing them off

  @jax.jit
  def run(v):
    return (att.apply(v, x, ctx), att.apply(v, x, ctx, kv_lengths=lengths),
            att.apply(v, x[:1], ctx[:1, :3]))

  out, masked, sliced = run(variables)
  # jax.nn.dot_product_attention forms its logits with preferred_element_type=float32, even for
  # float64 inputs: float32 accuracy is what it offers
  np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(masked[0], sliced[0], atol=1e-12)


def test_xla_and_default_attention_and_token_padding_agree():
  """implementation=None vs 'xla', and the padding the cuDNN path needs (even lengths, masked keys),
  run through XLA on the CPU; the cuDNN kernel itself is checked on a GPU (see the next test)."""
  images, toks = _images(), _tokens()
  vits = [ViT(**TINY_VIT, **kwargs) for kwargs in (  # 17 tokens: odd
      {}, dict(implementation="xla"), dict(token_multiple=2), dict(token_multiple=8))]
  texts = [TextTransformer(**TINY_TEXT), TextTransformer(**TINY_TEXT, token_multiple=2)]
  v_img, v_txt = _random_variables(vits[0], images), _random_variables(texts[0], toks)
  run = jax.jit(lambda vi, vt: ([vit.apply(vi, images) for vit in vits],
                                [text.apply(vt, toks) for text in texts]))
  (base, *others), (ref, padded) = run(v_img, v_txt)
  for other in others:
    np.testing.assert_allclose(other, base, atol=1e-5)
  np.testing.assert_allclose(padded, ref, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_cudnn_attention_matches_xla_on_gpu():
  images = _images(size=32).astype(jnp.bfloat16)
  kw = dict(patch_size=4, width=64, depth=2, num_heads=2, mlp_dim=64, dtype=jnp.bfloat16)
  variables = ViT(**kw).init(jax.random.key(0), images)
  xla = ViT(**kw, implementation="xla").apply(variables, images)
  cudnn = ViT(**kw, implementation="cudnn").apply(variables, images)
  np.testing.assert_allclose(np.asarray(cudnn, np.float32), np.asarray(xla, np.float32), atol=5e-2)


def _stack_blocks(params, depth):
  blocks = [params.pop(f"block_{i}") for i in range(depth)]
  params["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  return params


REMATS = ("none", "full", "dots")


@pytest.fixture(scope="module")
def encoder_results():
  """Values and gradients of a 3-block encoder: plain, scanned with each remat policy, and
  (unscanned) rematted with each policy. {'plain': (out, grads), 'scan_<remat>': (out, grads of the
  stacked params), 'remat_<remat>': grads}; unscanned remat='none' is the plain encoder itself."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 16)), jnp.float32)
  plain = Encoder(depth=3, num_heads=2, mlp_dim=24)
  # the initialiser's values: the gradients (up to ~100) then match the tolerances below
  variables = nn.unbox(jax.jit(plain.init)(jax.random.key(1), x))
  stacked = {"params": _stack_blocks(dict(variables["params"]), 3)}
  loss = lambda m, v: jnp.sum(m.apply(v, x) ** 2)
  # Plain and unscanned remat run un-jitted, op by op: their gradients then agree to the last bit,
  # as the 1e-5 below needs (two jitted programs fuse differently: ~2e-5 apart on these values).
  results = {"plain": (plain.apply(variables, x),
                       jax.grad(functools.partial(loss, plain))(variables))}
  for remat in REMATS[1:]:
    rematted = Encoder(depth=3, num_heads=2, mlp_dim=24, remat=remat)
    results[f"remat_{remat}"] = jax.grad(functools.partial(loss, rematted))(variables)

  def loss_and_out(model, v):
    out = model.apply(v, x)
    return jnp.sum(out ** 2), out

  @jax.jit
  def scanned(stacked):  # the three policies in one compile
    out = {}
    for remat in REMATS:
      model = Encoder(depth=3, num_heads=2, mlp_dim=24, scan=True, remat=remat)
      (_, value), grads = jax.value_and_grad(functools.partial(loss_and_out, model),
                                             has_aux=True)(stacked)
      out[f"scan_{remat}"] = (value, grads)
    return out
  return {**results, **scanned(stacked)}


@pytest.mark.parametrize("remat", REMATS)
def test_scan_and_remat_give_the_same_values_and_gradients(remat, encoder_results):
  out_plain, g_plain = encoder_results["plain"]
  out_scan, g_scan = encoder_results[f"scan_{remat}"]
  np.testing.assert_allclose(out_scan, out_plain, atol=1e-5)
  g_plain_stacked = _stack_blocks(dict(g_plain["params"]), 3)
  for a, b in zip(jax.tree.leaves(g_scan["params"]), jax.tree.leaves(g_plain_stacked)):
    np.testing.assert_allclose(a, b, atol=1e-4)
  if remat != "none":  # unscanned with remat='none' is the plain encoder: nothing to compare
    for a, b in zip(jax.tree.leaves(encoder_results[f"remat_{remat}"]), jax.tree.leaves(g_plain)):
      np.testing.assert_allclose(a, b, atol=1e-5)


def _tiny_two_tower(**kwargs):
  return TwoTower(ViT(**TINY_VIT), TextTransformer(**TINY_TEXT), embed_dim=8, **kwargs)


def _with_initial_logit_params(model, images, toks):
  """Random variables for model, except its logit scale (and bias) as model.init sets them. Only
  those leaves of the jitted init are returned, so the random initialisers are never compiled."""
  variables = _random_variables(model, images, toks)
  variables["params"].update(jax.jit(lambda key: {
      name: value for name, value in nn.unbox(model.init(key, images, toks))["params"].items()
      if name.startswith("logit_")})(KEY))
  return variables


def test_two_tower_outputs_scale_bias_and_clamp():
  images, toks = _images(), _tokens()
  clip, siglip = _tiny_two_tower(), _tiny_two_tower(loss="siglip")

  @jax.jit
  def run(variables, siglip_variables):
    big = jax.tree.map(lambda x: x, variables)
    big["params"]["logit_scale"] = jnp.float32(10.0)  # exp(10) > 100: clamped
    sig = siglip.apply(siglip_variables, images, toks)
    return (clip.apply(variables, images, toks),
            clip.apply(variables, images, method="encode_image"),
            clip.apply(big, images, toks).scale, (sig.scale, sig.bias))

  out, encoded, clamped, siglip_scale_bias = run(_with_initial_logit_params(clip, images, toks),
                                                 _with_initial_logit_params(siglip, images, toks))
  np.testing.assert_allclose(jnp.linalg.norm(out.image, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(out.text, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out.scale, 1 / 0.07, rtol=1e-5)
  assert out.bias is None and out.image.dtype == jnp.float32
  np.testing.assert_allclose(encoded, out.image)
  assert clamped == 100.0
  np.testing.assert_allclose(siglip_scale_bias, (10.0, -10.0), rtol=1e-6)
  with pytest.raises(ValueError, match="'softmax'"):
    _abstract(_tiny_two_tower(loss="softmax"), images, toks)


def test_locked_image_tower_gets_no_gradient():
  images, toks = _images(), _tokens()
  lit = _tiny_two_tower(lock="image")

  def loss(v):
    out = lit.apply(v, images, toks)
    return jnp.sum(out.image @ jnp.ones(8) + out.text @ jnp.ones(8))

  g = jax.jit(jax.grad(loss))(_random_variables(lit, images, toks))["params"]
  assert all(np.all(x == 0) for x in jax.tree.leaves(g["image_encoder"]))
  assert np.any(g["image_proj"]["kernel"] != 0)
  assert any(np.any(x != 0) for x in jax.tree.leaves(g["text_encoder"]))


def test_bf16_compute_keeps_fp32_params_and_finite_outputs():
  model = two_tower("tiny", dtype=jnp.bfloat16)
  images, toks = jnp.ones((2, 64, 64, 3)), jnp.ones((2, 32), jnp.int32)
  abstract = _abstract(model, images, toks)  # the dtypes init gives, traced without compiling it
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(abstract)))
  out = jax.jit(model.apply)(_random_variables(model, images, toks), images, toks)
  assert out.image.dtype == jnp.float32 and np.all(np.isfinite(out.image))


@pytest.fixture(scope="module")
def tiny_scanned():
  """The tiny preset with scanned layers, its inputs, its unsharded jitted init and the image
  embeddings of that init: the reference of both mesh shapes below, computed once."""
  model = two_tower("tiny", scan=True)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(8, 64, 64, 3)), jnp.float32)
  toks = jnp.asarray(np.random.default_rng(1).integers(1, 259, size=(8, 32)), jnp.int32)
  single = nn.unbox(jax.jit(model.init)(KEY, images, toks))
  return model, images, toks, single, jax.jit(model.apply)(single, images, toks).image


@pytest.mark.parametrize("mesh_shape", [(4, 2, 1), (2, 2, 2)])
def test_sharded_init_on_8_devices(mesh_shape, tiny_scanned):
  model, images, toks, single, single_image = tiny_scanned
  mesh = parallel.make_mesh(*mesh_shape)
  variables, _ = parallel.init_sharded(lambda k: model.init(k, images, toks), mesh,
                                       jax.random.key(0))
  fc1 = variables["params"]["image_encoder"]["encoder"]["blocks"]["mlp"]["fc1"]["kernel"]
  assert fc1.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert fc1.addressable_shards[0].data.shape == (2, 64 // mesh_shape[1], 256 // mesh_shape[2])
  # the same values as an unsharded jitted init (eager init differs in the last bit), same outputs
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(single)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  out = jax.jit(model.apply)(variables, images, toks)
  np.testing.assert_allclose(out.image, single_image, atol=1e-5)


def test_make_mesh_errors_name_the_sizes():
  with pytest.raises(ValueError, match=r"\(3, 1, 1\) need 3 devices, but 8"):
    parallel.make_mesh(3)
  with pytest.raises(ValueError, match="at most one -1"):
    parallel.make_mesh(-1, -1)
  assert parallel.make_mesh(-1, 2, 2).shape == {"data": 2, "fsdp": 2, "tensor": 2}


def test_convnet_shapes_pooling_and_translation_invariance():
  from mmjax.models.cnn import ConvNet  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  images = np.zeros((2, 128, 128, 3), np.float32)  # an object's receptive field (+-15 px) fits
  patch = rng.normal(size=(9, 9, 3)).astype(np.float32)
  images[0, 40:49, 36:45] = patch
  images[1, 40 + 16:49 + 16, 36 + 48:45 + 48] = patch  # moved by multiples of the total stride 16
  nets = {(pool, hue_pool): ConvNet(channels=(8, 16, 16, 24), pool=pool, hue_pool=hue_pool)
          for pool, hue_pool in itertools.product(("max", "mean"), (False, True))}
  variables = {k: _random_variables(net, images) for k, net in nets.items()}
  outs = jax.jit(lambda vs: {f"{pool}-{hue_pool}": net.apply(vs[pool, hue_pool], images)
                             for (pool, hue_pool), net in nets.items()})(variables)
  for pool, hue_pool in nets:
    out = np.asarray(outs[f"{pool}-{hue_pool}"])
    assert out.shape == (2, 24 + 8 * hue_pool)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-6)
    assert np.abs(out).sum() > 0
  with pytest.raises(ValueError, match="pool"):
    _abstract(ConvNet(pool="sum"), images)
  with pytest.raises(ValueError, match="batch, height, width"):
    _abstract(ConvNet(), images[0])


def _convnet_numpy(params: dict, images: np.ndarray, pool: str, hue_pool: bool) -> np.ndarray:
  """float64 numpy ConvNet: 3x3 stride-2 convolutions (padding 1) + ReLU, then pooling; with
  hue_pool the first layer is max-pooled over the 3 cyclic RGB permutations and pooled pointwise
  colour features are appended."""
  def conv_relu(x, layer):
    k, b = (np.asarray(params[layer][n], np.float64) for n in ("kernel", "bias"))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
    out = sum(xp[:, di:di + 2 * h:2, dj:dj + 2 * w:2] @ k[di, dj] for di in range(3) for dj in range(3))
    return np.maximum(out + b, 0)
  reduce = (lambda y: y.max((1, 2))) if pool == "max" else (lambda y: y.mean((1, 2)))
  x = images.astype(np.float64)
  colour = None
  if hue_pool:   # pointwise colour layer on the pixels the stride-2 outputs are centred on
    k, b = (np.asarray(params["colour"][n], np.float64) for n in ("kernel", "bias"))
    colour = np.maximum(x[:, ::2, ::2] @ k + b, 0)
  for i in range(len([n for n in params if n.startswith("conv_")])):
    if hue_pool and i == 0:
      x = np.max([conv_relu(np.roll(x, k, axis=-1), "conv_0") for k in range(3)], axis=0)
    else:
      x = conv_relu(x, f"conv_{i}")
  return reduce(x) if colour is None else np.concatenate([reduce(x), reduce(colour)], -1)


@pytest.mark.parametrize("pool", ["max", "mean"])
@pytest.mark.parametrize("hue_pool", [False, True])
def test_convnet_matches_float64_numpy(pool, hue_pool):
  from mmjax.models.cnn import ConvNet  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(1).normal(size=(3, 19, 22, 3)).astype(np.float32)  # odd sizes
  net = ConvNet(channels=(6, 8, 5), pool=pool, hue_pool=hue_pool)
  params = _random_variables(net, images, seed=2)  # non-zero biases
  out = np.asarray(jax.jit(net.apply)(params, images))
  assert out.shape == (3, 5 + 6 * hue_pool)
  expected = _convnet_numpy(params["params"], images, pool, hue_pool)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_convnet_hue_pool_is_invariant_to_the_rgb_rotation_and_keeps_colour():
  from mmjax.models.cnn import ConvNet  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
  net = ConvNet(channels=(8, 16, 12), hue_pool=True)
  params = _random_variables(net, images)
  apply = jax.jit(net.apply)  # compiled once, for the three inputs of one shape
  out = np.asarray(apply(params, images))
  for k in (1, 2):   # red -> green -> blue: the same three first-layer inputs in another order
    rolled = np.asarray(apply(params, np.roll(images, k, axis=-1)))
    np.testing.assert_allclose(rolled[:, :12], out[:, :12], rtol=1e-6, atol=1e-6)  # shape part
    assert np.abs(rolled[:, 12:] - out[:, 12:]).max() > 1e-2                      # colour part
  with pytest.raises(ValueError, match=r"hue_pool=True\) expects RGB images \(3 channels\), got "
                     r"shape \(4, 32, 32, 1\)"):
    _abstract(net, images[..., :1])


def test_two_tower_with_cnn_image_tower_and_bad_arch():
  model = two_tower("tiny", image_overrides=dict(arch="cnn", channels=(8, 16)),
                    text_overrides=dict(vocab_size=40, context_length=9))
  images = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
  tokens = np.ones((3, 9), np.int32)
  out = jax.jit(model.apply)(_random_variables(model, images, tokens), images, tokens)
  assert out.image.shape == out.text.shape == (3, PRESETS["tiny"]["embed_dim"])
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out.image), axis=1), 1, rtol=1e-5)
  with pytest.raises(ValueError, match="arch"):
    two_tower("tiny", image_overrides=dict(arch="resnet")).init(jax.random.key(0), images, tokens)
