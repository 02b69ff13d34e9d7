"""Encoders and the two-tower model: parameter counts, numerics against numpy, scan/remat/padding
equivalences, LiT locking, and sharded initialisation on the 8-device mesh."""
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


def n_params(variables):
  return sum(x.size for x in jax.tree.leaves(nn.unbox(variables)))


def block_params(d, m):
  return 4 * (d * d + d) + (2 * d * m + m + d) + 4 * d   # attention, mlp, two layer norms


def vit_params(p, c, d, depth, m, n_patches, pool):
  extra = {"cls": d + (n_patches + 1) * d, "gap": n_patches * d,
           "map": n_patches * d + 2 * d + d + 4 * (d * d + d) + 2 * d + (2 * d * m + m + d)}[pool]
  return p * p * c * d + extra + 2 * d + depth * block_params(d, m) + 2 * d


def _images(b=3, size=16, seed=0):
  return jax.random.normal(jax.random.key(seed), (b, size, size, 3))


def _tokens(b=3, seed=0):
  toks = np.random.default_rng(seed).integers(1, 38, size=(b, 9))
  for row, eot in enumerate((3, 8, 5)[:b]):
    toks[row, eot], toks[row, eot + 1:] = 39, 0
  return jnp.asarray(toks)


@pytest.mark.parametrize("pool", ["cls", "gap", "map"])
def test_vit_param_count_and_gradient(pool):
  vit = ViT(**TINY_VIT, pool=pool)
  variables = vit.init(jax.random.key(0), _images())
  assert n_params(variables) == vit_params(4, 3, 16, 2, 24, 16, pool)
  grads = jax.grad(lambda v: jnp.sum(vit.apply(v, _images()) ** 2))(variables)
  assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(grads))


def test_text_param_count_gradient_and_causal_eot_pooling():
  text = TextTransformer(**TINY_TEXT, eot_token_id=39)
  toks = _tokens()
  variables = text.init(jax.random.key(0), toks)
  assert n_params(variables) == 40 * 16 + 9 * 16 + 2 * block_params(16, 24) + 2 * 16
  out = text.apply(variables, toks)
  assert out.shape == (3, 16)
  # tokens after the end-of-text token cannot change the pooled feature (causal attention)
  changed = toks.at[0, 5:].set(7)
  np.testing.assert_allclose(text.apply(variables, changed)[0], out[0], atol=1e-6)
  # eot_token_id=None pools at the largest id, which is 39 here too
  np.testing.assert_allclose(TextTransformer(**TINY_TEXT).apply(variables, toks), out, atol=1e-6)
  grads = jax.grad(lambda v: jnp.sum(text.apply(v, toks) ** 2))(variables)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_mlp_encoder_param_count():
  enc = MlpEncoder(hidden=(32, 16), out_dim=8, norm=True)
  variables = enc.init(jax.random.key(0), jnp.ones((4, 10)))
  assert n_params(variables) == (10 * 32 + 32 + 2 * 32) + (32 * 16 + 16 + 2 * 16) + (16 * 8 + 8)
  with pytest.raises(ValueError, match=r"\(4, 2, 5\)"):
    enc.init(jax.random.key(0), jnp.ones((4, 2, 5)))


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
  x = jax.random.normal(jax.random.key(1), (2, 5, 8), jnp.float64)
  ctx = jax.random.normal(jax.random.key(2), (2, 7, 6), jnp.float64)
  variables = att.init(jax.random.key(0), x, ctx)
  p = jax.tree.map(np.asarray, nn.unbox(variables)["params"])
  q = np.einsum("btd,dnh->btnh", x, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("bsd,dnh->bsnh", ctx, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("bsd,dnh->bsnh", ctx, p["value"]["kernel"]) + p["value"]["bias"]
  logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(4)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  o = np.einsum("bnts,bsnh->btnh", w, v)
  want = np.einsum("btnh,nhd->btd", o, p["out"]["kernel"]) + p["out"]["bias"]
  # jax.nn.dot_product_attention forms its logits with preferred_element_type=float32, even for
  # float64 inputs: float32 accuracy is what it offers
  np.testing.assert_allclose(att.apply(variables, x, ctx), want, rtol=1e-6, atol=1e-6)
  lengths = jnp.array([3, 7])  # padded keys are ignored: the same as slicing them off
  masked = att.apply(variables, x, ctx, kv_lengths=lengths)
  np.testing.assert_allclose(masked[0], att.apply(variables, x[:1], ctx[:1, :3])[0], atol=1e-12)


def test_xla_and_default_attention_and_token_padding_agree():
  """implementation=None vs 'xla', and the padding the cuDNN path needs (even lengths, masked keys),
  run through XLA on the CPU; the cuDNN kernel itself is checked on a GPU (see the next test)."""
  images, toks = _images(), _tokens()
  base_vit = ViT(**TINY_VIT)
  v_img = base_vit.init(jax.random.key(0), images)  # 17 tokens: odd
  base = base_vit.apply(v_img, images)
  for kwargs in (dict(implementation="xla"), dict(token_multiple=2), dict(token_multiple=8)):
    np.testing.assert_allclose(ViT(**TINY_VIT, **kwargs).apply(v_img, images), base, atol=1e-5)
  base_text = TextTransformer(**TINY_TEXT)
  v_txt = base_text.init(jax.random.key(0), toks)
  ref = base_text.apply(v_txt, toks)
  np.testing.assert_allclose(TextTransformer(**TINY_TEXT, token_multiple=2).apply(v_txt, toks),
                             ref, atol=1e-5)


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


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_scan_and_remat_give_the_same_values_and_gradients(remat):
  x = jax.random.normal(jax.random.key(0), (2, 6, 16))
  plain = Encoder(depth=3, num_heads=2, mlp_dim=24)
  variables = nn.unbox(plain.init(jax.random.key(1), x))
  stacked = {"params": _stack_blocks(dict(variables["params"]), 3)}
  scanned = Encoder(depth=3, num_heads=2, mlp_dim=24, scan=True, remat=remat)
  loss = lambda m, v: jnp.sum(m.apply(v, x) ** 2)
  np.testing.assert_allclose(scanned.apply(stacked, x), plain.apply(variables, x), atol=1e-5)
  g_plain = _stack_blocks(dict(jax.grad(lambda v: loss(plain, v))(variables)["params"]), 3)
  g_scan = jax.grad(lambda v: loss(scanned, v))(stacked)["params"]
  for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(a, b, atol=1e-4)
  rematted = Encoder(depth=3, num_heads=2, mlp_dim=24, remat=remat)
  g_remat = jax.grad(lambda v: loss(rematted, v))(variables)
  for a, b in zip(jax.tree.leaves(g_remat), jax.tree.leaves(jax.grad(lambda v: loss(plain, v))(variables))):
    np.testing.assert_allclose(a, b, atol=1e-5)


def _tiny_two_tower(**kwargs):
  return TwoTower(ViT(**TINY_VIT), TextTransformer(**TINY_TEXT), embed_dim=8, **kwargs)


def test_two_tower_outputs_scale_bias_and_clamp():
  images, toks = _images(), _tokens()
  clip = _tiny_two_tower()
  variables = clip.init(jax.random.key(0), images, toks)
  out = clip.apply(variables, images, toks)
  np.testing.assert_allclose(jnp.linalg.norm(out.image, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(out.text, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out.scale, 1 / 0.07, rtol=1e-5)
  assert out.bias is None and out.image.dtype == jnp.float32
  np.testing.assert_allclose(clip.apply(variables, images, method="encode_image"), out.image)
  big = jax.tree.map(lambda x: x, nn.unbox(variables))
  big["params"]["logit_scale"] = jnp.float32(10.0)  # exp(10) > 100: clamped
  assert clip.apply(big, images, toks).scale == 100.0
  siglip = _tiny_two_tower(loss="siglip")
  out = siglip.apply(siglip.init(jax.random.key(0), images, toks), images, toks)
  np.testing.assert_allclose((out.scale, out.bias), (10.0, -10.0), rtol=1e-6)
  with pytest.raises(ValueError, match="'softmax'"):
    _tiny_two_tower(loss="softmax").init(jax.random.key(0), images, toks)


def test_locked_image_tower_gets_no_gradient():
  images, toks = _images(), _tokens()
  lit = _tiny_two_tower(lock="image")
  variables = lit.init(jax.random.key(0), images, toks)
  grads = jax.grad(lambda v: jnp.sum(lit.apply(v, images, toks).image @ jnp.ones(8)
                                     + lit.apply(v, images, toks).text @ jnp.ones(8)))(variables)
  g = nn.unbox(grads)["params"]
  assert all(np.all(x == 0) for x in jax.tree.leaves(g["image_encoder"]))
  assert np.any(g["image_proj"]["kernel"] != 0)
  assert any(np.any(x != 0) for x in jax.tree.leaves(g["text_encoder"]))


def test_bf16_compute_keeps_fp32_params_and_finite_outputs():
  model = two_tower("tiny", dtype=jnp.bfloat16)
  images, toks = jnp.ones((2, 64, 64, 3)), jnp.ones((2, 32), jnp.int32)
  variables = model.init(jax.random.key(0), images, toks)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(variables)))
  out = jax.jit(model.apply)(variables, images, toks)
  assert out.image.dtype == jnp.float32 and np.all(np.isfinite(out.image))


@pytest.mark.parametrize("mesh_shape", [(4, 2, 1), (2, 2, 2)])
def test_sharded_init_on_8_devices(mesh_shape):
  model = two_tower("tiny", scan=True)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(8, 64, 64, 3)), jnp.float32)
  toks = jnp.asarray(np.random.default_rng(1).integers(1, 259, size=(8, 32)), jnp.int32)
  mesh = parallel.make_mesh(*mesh_shape)
  variables, _ = parallel.init_sharded(lambda k: model.init(k, images, toks), mesh,
                                       jax.random.key(0))
  fc1 = variables["params"]["image_encoder"]["encoder"]["blocks"]["mlp"]["fc1"]["kernel"]
  assert fc1.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert fc1.addressable_shards[0].data.shape == (2, 64 // mesh_shape[1], 256 // mesh_shape[2])
  # the same values as an unsharded jitted init (eager init differs in the last bit), same outputs
  single = jax.jit(model.init)(jax.random.key(0), images, toks)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(nn.unbox(single))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  out = jax.jit(model.apply)(variables, images, toks)
  np.testing.assert_allclose(out.image, model.apply(nn.unbox(single), images, toks).image, atol=1e-5)


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
  for pool, hue_pool in itertools.product(("max", "mean"), (False, True)):
    net = ConvNet(channels=(8, 16, 16, 24), pool=pool, hue_pool=hue_pool)
    params = net.init(jax.random.key(0), images)
    out = np.asarray(net.apply(params, images))
    assert out.shape == (2, 24 + 8 * hue_pool)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-6)
    assert np.abs(out).sum() > 0
  with pytest.raises(ValueError, match="pool"):
    ConvNet(pool="sum").init(jax.random.key(0), images)
  with pytest.raises(ValueError, match="batch, height, width"):
    ConvNet().init(jax.random.key(0), images[0])


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
  params = jax.tree.map(lambda p: p + 0.1, nn.unbox(net.init(jax.random.key(2), images)))
  out = np.asarray(net.apply(params, images))
  assert out.shape == (3, 5 + 6 * hue_pool)
  expected = _convnet_numpy(params["params"], images, pool, hue_pool)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_convnet_hue_pool_is_invariant_to_the_rgb_rotation_and_keeps_colour():
  from mmjax.models.cnn import ConvNet  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
  net = ConvNet(channels=(8, 16, 12), hue_pool=True)
  params = net.init(jax.random.key(0), images)
  out = np.asarray(net.apply(params, images))
  for k in (1, 2):   # red -> green -> blue: the same three first-layer inputs in another order
    rolled = np.asarray(net.apply(params, np.roll(images, k, axis=-1)))
    np.testing.assert_allclose(rolled[:, :12], out[:, :12], rtol=1e-6, atol=1e-6)  # shape part
    assert np.abs(rolled[:, 12:] - out[:, 12:]).max() > 1e-2                      # colour part
  with pytest.raises(ValueError, match=r"hue_pool=True\) expects RGB images \(3 channels\), got "
                     r"shape \(4, 32, 32, 1\)"):
    net.init(jax.random.key(0), images[..., :1])


def test_two_tower_with_cnn_image_tower_and_bad_arch():
  model = two_tower("tiny", image_overrides=dict(arch="cnn", channels=(8, 16)),
                    text_overrides=dict(vocab_size=40, context_length=9))
  images = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
  tokens = np.ones((3, 9), np.int32)
  out = model.apply(model.init(jax.random.key(0), images, tokens), images, tokens)
  assert out.image.shape == out.text.shape == (3, PRESETS["tiny"]["embed_dim"])
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out.image), axis=1), 1, rtol=1e-5)
  with pytest.raises(ValueError, match="arch"):
    two_tower("tiny", image_overrides=dict(arch="resnet")).init(jax.random.key(0), images, tokens)
