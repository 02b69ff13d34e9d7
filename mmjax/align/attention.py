"""Attention-based (implicit) alignment: read which image patch a word attends to or resembles.

  capture_attention            attention weights of every mmjax Attention layer in a forward pass
                               of any Flax model (e.g. the text-to-patch cross-attention of MulT or
                               ViLBERT), recomputed from the captured query and key projections
  attention_alignment          (layers and) heads averaged: a row-stochastic word-to-patch matrix
  patch_embeddings             per-patch embeddings of a TwoTower in its joint space
  occlusion_alignment          word-to-patch alignment of a TwoTower by occluding each patch
  token_embeddings             per-token text embeddings of a TwoTower in its joint space
  span_embeddings              mean embedding of token spans (the tokens of each word)
  similarity_alignment         softmax over patches of cosine similarity / temperature

Models are applied with Flax's capture_intermediates, so no model file needs a hook. The dense
readout of a TwoTower follows MaskCLIP (Zhou et al. 2022, "Extract Free Dense Labels from CLIP"):
each patch token of the image tower's last layer goes through the tower's final LayerNorm and the
image projection, as the pooled token does, and is compared with text embeddings by cosine.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from mmjax.models.common import LayerNorm, length_mask
from mmjax.models.text import TextTransformer
from mmjax.models.transformer import Attention
from mmjax.models.two_tower import TwoTower
from mmjax.models.vit import ViT
from mmjax.similarity import l2_normalize

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""


def _capture(model: nn.Module, variables, *args, keep, method=None, **kwargs) -> dict:
  """{'path/of/module': output} for the modules keep(module) selects, from one forward pass."""
  def select(module, method_name):
    return method_name == "__call__" and keep(module)

  _, state = model.apply(variables, *args, method=method, capture_intermediates=select,
                         mutable=["intermediates"], **kwargs)
  flat = traverse_util.flatten_dict(state.get("intermediates", {}), sep="/")
  return {k[:-len("/__call__")]: v[0] for k, v in flat.items()}


def capture_attention(model: nn.Module, variables, *args, method=None, kv_lengths=None,
                      is_causal: bool = False, **kwargs) -> dict[str, Array]:
  """Attention weights of every mmjax.models.transformer.Attention layer in model.apply(variables,
  *args, method=method, **kwargs), keyed by the layer's path (e.g. 'block_0/attn'):

      A = softmax(q k^T / sqrt(head_dim))   over the keys,   (B, heads, T, S) per layer,
  recomputed from the captured query (B, T, heads, hd) and key (B, S, heads, hd) projections, the
  same product jax.nn.dot_product_attention takes inside the layer. Masks are not visible from
  outside: pass kv_lengths (B,) (valid keys per row) and is_causal as the layer used them; they are
  applied to every captured layer. Layers inside nn.scan (models built with scan=True) are not
  visible to capture_intermediates; a forward pass without any visible layer is a ValueError.

  Returns:
    {path: (B, heads, T, S)} float32 weights, rows summing to 1.
  """
  captured = _capture(model, variables, *args, method=method,
                      keep=lambda m: m.name in ("query", "key") and isinstance(m.parent, Attention),
                      **kwargs)
  if not captured:
    raise ValueError(f"capture_attention: no mmjax Attention layer ran in {type(model).__name__}"
                     f"'s forward pass (method={method!r}); layers inside nn.scan (scan=True) are "
                     "not visible")
  out = {}
  for path in sorted({k.rsplit("/", 1)[0] for k in captured}):
    q = captured[f"{path}/query"].astype(jnp.float32)                 # (B, T, N, H)
    k = captured[f"{path}/key"].astype(jnp.float32)                   # (B, S, N, H)
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])
    t, s = logits.shape[-2:]
    valid = jnp.ones((t, s), bool)
    if is_causal:
      valid = jnp.tril(valid)
    if kv_lengths is not None:
      keys_ok = length_mask(kv_lengths, s)                            # (B, S)
      valid = valid & keys_ok[:, None, None, :]                       # (B, 1, T, S)
    out[path] = jax.nn.softmax(jnp.where(valid, logits, -jnp.inf), axis=-1)
  return out


def attention_alignment(weights: Array | Sequence[Array]) -> Array:
  """Word-to-patch alignment from cross-attention weights: the mean over heads (and over layers
  when a list is given) of (B, heads, T, S) weights -> (B, T, S), rows summing to 1; its argmax
  over S is each query's (word's) hard alignment."""
  ws = [weights] if not isinstance(weights, (list, tuple)) else list(weights)
  if not ws or any(jnp.ndim(w) != 4 or jnp.shape(w) != jnp.shape(ws[0]) for w in ws):
    raise ValueError(f"attention_alignment expects one or more (batch, heads, queries, keys) "
                     f"arrays of one shape, got shapes {[jnp.shape(w) for w in ws]}")
  return jnp.mean(jnp.stack([jnp.asarray(w, jnp.float32) for w in ws]), axis=(0, 2))


def _check_two_tower(model) -> None:
  tower = getattr(model, "image_encoder", None)
  if not isinstance(model, TwoTower) or not isinstance(tower, ViT):
    raise ValueError(f"expected a TwoTower with a ViT image tower, got {type(model).__name__} "
                     f"with image_encoder {type(tower).__name__}")


READOUTS = ("tokens", "value")


def _last_block_values(model: TwoTower, variables, images: Array) -> Array:
  """MaskCLIP's readout: the last block's attention without its query-key mixing, out(v(LN(x))),
  (B, tokens, D); v and out are that layer's value and output projections."""
  vit = model.image_encoder
  if vit.scan:
    raise ValueError("readout='value' needs a ViT built with scan=False: capture_intermediates "
                     "does not see inside nn.scan")
  last = f"block_{vit.depth - 1}"
  v = _capture(model, variables, images, method="encode_image",
               keep=lambda m: m.name == "value" and isinstance(m.parent, Attention))
  v = v[f"image_encoder/encoder/{last}/attn/value"]                   # (B, tokens, heads, hd)
  out = nn.unbox(variables)["params"]["image_encoder"]["encoder"][last]["attn"]["out"]
  return nn.DenseGeneral(vit.width, axis=(-2, -1), dtype=vit.dtype).apply({"params": out}, v)


def patch_embeddings(model: TwoTower, variables, images: Array, *,
                     readout: str = "tokens") -> Array:
  """Per-patch embeddings of a TwoTower: (B, H, W, C) -> (B, H/p * W/p, E), L2-normalised, rows
  of patches in raster order (patch r * (W/p) + c covers pixels [r p, (r+1) p) x [c p, (c+1) p)).

  readout='tokens': the last encoder layer's patch tokens; 'value': MaskCLIP's (Zhou et al. 2022),
  the last layer's value projections passed through its output projection, without the query-key
  attention (which mixes image-wide context into every token) and without the residual and MLP.
  Either goes through the ViT's ln_post -> image_proj -> L2 normalisation, the map the pooled token
  goes through (class token and padding dropped). For pool='gap' or 'map' this is a per-token
  version of a readout that was trained on a pooled vector."""
  _check_two_tower(model)
  if readout not in READOUTS:
    raise ValueError(f"unknown readout {readout!r}; expected one of {READOUTS}")
  vit = model.image_encoder
  if readout == "value":
    tokens = _last_block_values(model, variables, images)
  else:
    tokens = _capture(model, variables, images, method="encode_image",
                      keep=lambda m: m.name == "encoder" and isinstance(m.parent, ViT))
    tokens = tokens["image_encoder/encoder"]                          # (B, tokens, D)
  n = (images.shape[1] // vit.patch_size) * (images.shape[2] // vit.patch_size)
  first = 1 if vit.pool == "cls" else 0
  tokens = tokens[:, first:first + n]                                 # (B, N, D)
  params = nn.unbox(variables)["params"]["image_encoder"]["ln_post"]
  tokens = LayerNorm(epsilon=vit.layer_norm_eps, dtype=vit.dtype).apply({"params": params}, tokens)
  return l2_normalize(model.apply(variables, tokens, method=lambda m, x: m.image_proj(x)))


def occlusion_alignment(model: TwoTower, variables, images: Array,
                        text_embeddings: Array) -> Array:
  """Word-to-patch alignment of a TwoTower by occlusion (Zeiler & Fergus 2014, "Visualizing and
  Understanding Convolutional Networks"): how much the image-text similarity drops when a patch is
  hidden,

      A[b, w, n] = cos(f(x_b), t_bw) - cos(f(x_b with patch n hidden), t_bw),

  with f the image tower and its projection (encode_image); a hidden patch takes its image's mean
  colour. Unlike patch_embeddings it reads the
  pooled embedding the model was trained on, at the price of N + 1 image-tower passes per image
  (one image at a time, in a lax.map).

  Args:
    model, variables: a TwoTower with a ViT image tower and its variables.
    images: (B, H, W, C).
    text_embeddings: (B, W, E) L2-normalised text embeddings (e.g. encode_text of each word).

  Returns:
    (B, W, N) similarity drops, patches in raster order as in patch_embeddings.
  """
  _check_two_tower(model)
  p = model.image_encoder.patch_size
  b, h, w, _ = images.shape
  if text_embeddings.ndim != 3 or text_embeddings.shape[0] != b:
    raise ValueError(f"occlusion_alignment expects text_embeddings (B={b}, W, E), got shape "
                     f"{text_embeddings.shape}")
  rows, cols = h // p, w // p
  masks = jnp.eye(rows * cols).reshape(rows * cols, rows, 1, cols, 1)
  masks = jnp.broadcast_to(masks, (rows * cols, rows, p, cols, p)).reshape(rows * cols, h, w, 1)

  def one(args):
    image, text = args                                                # (H, W, C), (W, E)
    fill = jnp.mean(image, axis=(0, 1))
    hidden = image[None] * (1 - masks) + fill * masks                 # (N, H, W, C)
    emb = model.apply(variables, jnp.concatenate([image[None], hidden]), method="encode_image")
    sim = emb @ text.T                                                # (N + 1, W)
    return (sim[0][None] - sim[1:]).T                                 # (W, N)

  return jax.lax.map(one, (images, text_embeddings.astype(jnp.float32)))


def token_embeddings(model: TwoTower, variables, tokens: Array) -> Array:
  """Per-token text embeddings of a TwoTower: (B, L) -> (B, L, E), L2-normalised: the text tower's
  final LayerNorm output at every position -> text_proj. With a causal tower, position t has seen
  tokens 0..t only; the end-of-text position is the usual text embedding."""
  if not isinstance(model, TwoTower):
    raise ValueError(f"expected a TwoTower, got {type(model).__name__}")
  states = _capture(model, variables, tokens, method="encode_text",
                    keep=lambda m: m.name == "ln_final" and isinstance(m.parent, TextTransformer))
  states = states["text_encoder/ln_final"]                            # (B, L, D)
  return l2_normalize(model.apply(variables, states, method=lambda m, x: m.text_proj(x)))


def span_embeddings(embeddings: Array, spans: Array) -> Array:
  """Mean of embeddings over token spans, L2-normalised: (B, L, E), (B, W, 2) int [start, end)
  -> (B, W, E); e.g. the tokens of each word of a caption. An empty span gives 0."""
  spans = jnp.asarray(spans)
  if embeddings.ndim != 3 or spans.ndim != 3 or spans.shape[-1] != 2 or (
      spans.shape[0] != embeddings.shape[0]):
    raise ValueError(f"span_embeddings expects embeddings (B, L, E) and spans (B, W, 2) with the "
                     f"same B, got shapes {embeddings.shape} and {spans.shape}")
  pos = jnp.arange(embeddings.shape[1])
  inside = (pos >= spans[..., :1]) & (pos < spans[..., 1:])           # (B, W, L)
  return l2_normalize(jnp.einsum("bwl,ble->bwe", inside.astype(embeddings.dtype), embeddings))


def similarity_alignment(queries: Array, keys: Array, *, temperature: float = 0.1) -> Array:
  """Soft alignment of each query (word) over the keys (patches) by cosine similarity:
      A_ts = softmax_s(cos(q_t, k_s) / temperature),  (..., T, E), (..., S, E) -> (..., T, S).
  Its argmax over s is the nearest patch; temperature -> 0 makes it one-hot."""
  if queries.ndim < 2 or keys.ndim != queries.ndim or queries.shape[-1] != keys.shape[-1]:
    raise ValueError(f"similarity_alignment expects queries (..., T, E) and keys (..., S, E), got "
                     f"shapes {queries.shape} and {keys.shape}")
  sim = jnp.einsum("...te,...se->...ts", l2_normalize(queries), l2_normalize(keys))
  return jax.nn.softmax(sim / temperature, axis=-1)
