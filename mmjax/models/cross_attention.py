"""Cross-modal attention: co-attention (ViLBERT), cross-modal transformer (MulT), single stream
(VisualBERT).

  CoAttentionBlock         two streams, each attending to the other (Lu et al. 2019)
  CrossModalBlock          a target attends to a source, then a feed-forward (Tsai et al. 2019)
  CrossModalTransformer    `depth` CrossModalBlocks and a final LayerNorm (MulT)
  SingleStreamTransformer  one encoder over the concatenated modalities (Li et al. 2019)

Built from mmjax.models.transformer (pre-LN, attention through jax.nn.dot_product_attention, bf16
compute with fp32 params, logically named params). Key padding: a `*_lengths` argument is a (B,) int
array counting the real tokens at the start of each row of that sequence; padded keys get no
attention weight, so the padding never changes the outputs at real positions (the outputs at padded
positions are meaningless). Positions are the caller's business for the first three (MulT adds
sinusoidal ones to both sequences); SingleStreamTransformer learns its own.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.common import Dtype, LayerNorm, logical
from mmjax.models.transformer import Attention, Encoder, Mlp


def _check_seq(x, name: str, batch: int | None = None) -> None:
  if x.ndim != 3:
    raise ValueError(f"{name} must be a (batch, length, features) array, got shape {x.shape}")
  if batch is not None and x.shape[0] != batch:
    raise ValueError(f"{name} has batch size {x.shape[0]}, expected {batch} like the first input")


def _lengths(n):
  """(B,) key lengths as the int32 jax.nn.dot_product_attention needs (numpy gives int64)."""
  return None if n is None else jnp.asarray(n, jnp.int32)


def _constrain(x):
  return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class CoAttentionBlock(nn.Module):
  """ViLBERT's co-attentional transformer layer (Lu et al. 2019, "ViLBERT: Pretraining
  Task-Agnostic Visiolinguistic Representations for Vision-and-Language Tasks"), pre-LN.

  Each stream's queries attend to the other stream's keys and values, both read as they come in:
      x' = x + Attn_x(LN(x), LN(y)),    y' = y + Attn_y(LN(y), LN(x))
      x" = x' + Mlp_x(LN(x')),          y" = y' + Mlp_y(LN(y'))
  x (B, T1, D1), y (B, T2, D2) -> (B, T1, D1), (B, T2, D2). The widths may differ (ViLBERT's visual
  and text streams do): Attn_x has D1 / num_heads wide heads and projects y's keys and values from
  D2, and conversely.

  Attributes:
    num_heads: heads of both attentions (D1 and D2 must be divisible by it).
    mlp_dim: hidden width of the feed-forward layers, one int for both streams or a pair (x, y).
  """
  num_heads: int
  mlp_dim: int | tuple[int, int]
  act: str = "gelu"
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x, y, x_lengths=None, y_lengths=None):
    _check_seq(x, "x")
    _check_seq(y, "y", x.shape[0])
    x_lengths, y_lengths = _lengths(x_lengths), _lengths(y_lengths)
    mlp_x, mlp_y = (self.mlp_dim,) * 2 if isinstance(self.mlp_dim, int) else self.mlp_dim
    norm = functools.partial(LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    attn = functools.partial(Attention, self.num_heads, self.dtype, self.param_dtype,
                             self.implementation)
    mlp = functools.partial(Mlp, act=self.act, dtype=self.dtype, param_dtype=self.param_dtype)
    xn, yn = norm(name="ln_x")(x), norm(name="ln_y")(y)
    x = x + attn(name="attn_x")(xn, yn, kv_lengths=y_lengths)    # x queries y: (B, T1, D1)
    y = y + attn(name="attn_y")(yn, xn, kv_lengths=x_lengths)    # y queries x: (B, T2, D2)
    x = x + mlp(mlp_x, name="mlp_x")(norm(name="ln_mlp_x")(x))
    y = y + mlp(mlp_y, name="mlp_y")(norm(name="ln_mlp_y")(y))
    return _constrain(x), _constrain(y)


class CrossModalBlock(nn.Module):
  """One crossmodal attention block of MulT (Tsai et al. 2019, "Multimodal Transformer for
  Unaligned Multimodal Language Sequences"), pre-LN on both sequences:
      z' = z + Attn(LN(z), LN_s(s)),    z" = z' + Mlp(LN(z'))
  target z (B, T, D), source s (B, S, Ds) -> (B, T, D). The residual goes around the block input,
  as in the authors' code (the paper's equation adds LN(z) instead).
  """
  num_heads: int
  mlp_dim: int
  act: str = "gelu"
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x, source, source_lengths=None):
    norm = functools.partial(LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    y = Attention(self.num_heads, self.dtype, self.param_dtype, self.implementation, name="attn")(
        norm(name="ln_1")(x), norm(name="ln_source")(source), kv_lengths=source_lengths)
    x = x + y                                                     # (B, T, D)
    y = Mlp(self.mlp_dim, self.act, self.dtype, self.param_dtype, name="mlp")(norm(name="ln_2")(x))
    return _constrain(x + y)


class CrossModalTransformer(nn.Module):
  """MulT's crossmodal transformer beta -> alpha (Tsai et al. 2019): the target repeatedly attends
  to the same (unchanged) low-level source through `depth` CrossModalBlocks, then a LayerNorm.

  target (B, T, D), source (B, S, Ds) -> (B, T, D). MulT runs one per ordered pair of modalities
  and concatenates the results that share a target.
  """
  depth: int
  num_heads: int
  mlp_dim: int
  act: str = "gelu"
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x, source, source_lengths=None):
    _check_seq(x, "target")
    _check_seq(source, "source", x.shape[0])
    source_lengths = _lengths(source_lengths)
    for i in range(self.depth):
      x = CrossModalBlock(self.num_heads, self.mlp_dim, self.act, self.layer_norm_eps, self.dtype,
                          self.param_dtype, self.implementation, name=f"block_{i}")(
                              x, source, source_lengths)
    return LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="ln_final")(x)


class SingleStreamTransformer(nn.Module):
  """Single-stream encoder in the manner of VisualBERT (Li et al. 2019, "VisualBERT: A Simple and
  Performant Baseline for Vision and Language"): the tokens of every modality go through one
  transformer, so each layer attends within and across modalities.

      e_m = P_m(x_m) + pos[:T_m] + modality[m]        (B, T_m, D) for each modality m
      h = LN(Encoder([e_0; e_1; ...]))                 (B, T_0 + T_1 + ..., D)
      pooled = tanh(W h[:, 0] + b)                     (B, D), BERT's pooler, with pool=True
  P_m is a Dense layer (VisualBERT's projection of region features) when modality m's feature size
  D_m differs from `width`, else the identity. Positions count from 0 within each modality; with the
  modality (segment) embedding, (modality, position) tells every token apart. The pooled token is
  the first token of modality 0 (e.g. its [CLS]), which must be present in every row.

  Padding: lengths[m] (B,) counts the real tokens of modality m. The padded tokens sit between the
  modalities, so the real tokens are first gathered to the front of each row (attention without
  positional bias does not care about the order), the encoder runs with key_value_seq_lengths (which
  cuDNN supports, unlike a general mask), and the outputs are put back in the input layout.

  Attributes:
    num_modalities, width, depth, num_heads, mlp_dim: the architecture.
    max_length: rows of the position table, the longest sequence of any one modality.
    pool: also return the pooled first token.
    token_multiple: pad the joint sequence to a multiple of this with masked keys (cuDNN rejects odd
      lengths in training, so implementation='cudnn' pads to an even length by itself).
    remat, scan, implementation, dtype, param_dtype: see mmjax.models.transformer.Encoder.
  """
  num_modalities: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  max_length: int
  pool: bool = False
  act: str = "gelu"
  layer_norm_eps: float = 1e-5
  token_multiple: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None
  remat: str = "none"
  scan: bool = False

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], lengths: Sequence[jax.Array | None] | None = None):
    if len(xs) != self.num_modalities:
      raise ValueError(f"SingleStreamTransformer(num_modalities={self.num_modalities}) got "
                       f"{len(xs)} input sequences")
    if lengths is not None and len(lengths) != self.num_modalities:
      raise ValueError(f"lengths must hold one (batch,) array or None per modality "
                       f"({self.num_modalities}), got {len(lengths)}")
    b, d = xs[0].shape[0], self.width
    for m, x in enumerate(xs):
      _check_seq(x, f"xs[{m}]", b)
      if x.shape[1] > self.max_length:
        raise ValueError(f"xs[{m}] has length {x.shape[1]} > max_length={self.max_length}")
    modality = self.param("modality_embed", logical(nn.initializers.normal(0.02), "modality",
                                                    "embed"), (self.num_modalities, d),
                          self.param_dtype)
    pos = self.param("pos_embed", logical(nn.initializers.normal(0.02), "length", "embed"),
                     (self.max_length, d), self.param_dtype)
    tokens, valid = [], []
    for m, x in enumerate(xs):
      t = x.shape[1]
      if x.shape[-1] != d:
        x = nn.Dense(d, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=logical(nn.initializers.lecun_normal(), None, "embed"),
                     bias_init=logical(nn.initializers.zeros, "embed"), name=f"proj_{m}")(x)
      tokens.append(x.astype(self.dtype) + (pos[:t] + modality[m]).astype(self.dtype))
      n_m = None if lengths is None else lengths[m]
      valid.append(jnp.ones((b, t), bool) if n_m is None
                   else jnp.arange(t) < jnp.asarray(n_m)[:, None])   # (B, T_m)
    x = jnp.concatenate(tokens, axis=1)                           # (B, T, D)
    n = x.shape[1]
    order = None
    kv_lengths = None
    if lengths is not None and any(n_m is not None for n_m in lengths):
      valid = jnp.concatenate(valid, axis=1)                      # (B, T)
      order = jnp.argsort(jnp.logical_not(valid), axis=1, stable=True)  # real tokens first
      x = jnp.take_along_axis(x, order[..., None], axis=1)
      kv_lengths = jnp.sum(valid, axis=1, dtype=jnp.int32)        # (B,)
    multiple = max(self.token_multiple, 2 if self.implementation == "cudnn" else 1)
    if n % multiple:
      x = jnp.pad(x, ((0, 0), (0, -n % multiple), (0, 0)))
      kv_lengths = jnp.full((b,), n, jnp.int32) if kv_lengths is None else kv_lengths
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.act, False, self.layer_norm_eps,
                self.dtype, self.param_dtype, self.implementation, self.remat, self.scan,
                name="encoder")(x, kv_lengths)[:, :n]
    if order is not None:
      x = jnp.take_along_axis(x, jnp.argsort(order, axis=1)[..., None], axis=1)  # input layout
    x = LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                  name="ln_final")(x)
    if not self.pool:
      return x
    pooled = nn.Dense(d, dtype=self.dtype, param_dtype=self.param_dtype,
                      kernel_init=logical(nn.initializers.lecun_normal(), "embed", "proj"),
                      bias_init=logical(nn.initializers.zeros, "proj"), name="pooler")(x[:, 0])
    return x, jnp.tanh(pooled)                                    # (B, T, D), (B, D)
