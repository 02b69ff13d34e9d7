"""Classifiers of unaligned multimodal sequences: streams at different rates, each row with its own
offsets and time warps between streams (issue 17).

  sinusoidal_positions(T, D)  (T, D) fixed sine / cosine positions (Vaswani et al. 2017)
  sinusoidal_encoding(p, D)   (..., D) the same features at real-valued positions p (...,)
  time_positions(n, T, scale) (B, T) each step's centre on its stream's normalised time
                              (from mmjax.models.common)
  masked_mean(x, lengths)     (B, T, D), (B,) -> (B, D) mean over the real steps (0 for none)
  StreamEmbed       one stream -> (B, T, width), lengths: Dense (features) or Embed (tokens) plus
                    positions; absent rows get a learned mask token
  Unimodal          one stream: self-attention encoder, masked mean pool, Dense head
  LateFusion        a Unimodal branch per stream, logits summed (decision level)
  EarlyFusion       the streams aligned to a reference stream's clock (DTW, OT or plain
                    resampling; mmjax.align.resample), concatenated per step, a per-step
                    MLP, pooled
  PooledFusion      masked-mean pooled streams fused by TFN (Zadeh et al. 2017) or LMF (Liu et al.
                    2018)
  MulT              crossmodal transformers for every ordered pair of streams (Tsai et al. 2019)
  GraphClassifier   a graph module over the embedded streams (e.g. MTAG, mmjax.models.mtag)
  SEQUENCE_MODELS   name -> class: unimodal, late, early, pooled, mult, graph

Inputs: a dict with, for each stream `s` a model reads (its `streams`; every other key is ignored),
  s: (B, T, F) float features, or (B, T) int tokens for a stream named in `vocab_sizes`,
  s + "_length": (B,) int real steps at the start of each row (default T; padding after),
  s + "_present": (B,) bool, optional: False marks the stream missing for that row.
Every model maps it to logits (B, num_classes), float32. Training with streams missing at random
(ModDrop, Neverova et al. 2016) is the input pipeline's: mmjax.data.sequences marks them absent.

Padding: padded steps are zeroed on input and masked everywhere (attention keys, pools, alignment),
so what lies beyond the lengths never changes the logits. A missing stream (present False, any
length, even 0) becomes max(length, 1) copies of the stream's learned mask token, so "absent" is an
input the model learns from, and no attention ever sees an empty set of keys (no NaN).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.common import (Dtype, LayerNorm, MlpHead, length_mask, logical, named_dense,
                                 time_positions)
from mmjax.models.cross_attention import CrossModalTransformer
from mmjax.models.fusion import LowRankFusion, TensorFusion
from mmjax.models.transformer import Encoder

Array = jax.Array
"""@private The type of array arguments (jax.Array)."""

DEFAULT_STREAMS = ("audio", "video", "words")
FUSIONS = ("tensor", "lowrank")


def sinusoidal_encoding(positions, width: int) -> Array:
  """Fixed sine / cosine features (Vaswani et al. 2017) of real-valued positions p: (...,) ->
  (..., D) with sin(p w_k) in the first ceil(D/2) columns and cos(p w_k) in the rest,
  w_k = 10000^(-2k/D)."""
  half = (width + 1) // 2
  w = 10000.0 ** (-2 * jnp.arange(half, dtype=jnp.float32) / width)  # (D/2,)
  p = jnp.asarray(positions, jnp.float32)[..., None] * w             # (..., D/2)
  return jnp.concatenate([jnp.sin(p), jnp.cos(p)], -1)[..., :width]


def sinusoidal_positions(length: int, width: int) -> Array:
  """Fixed positions (Vaswani et al. 2017): (T, D), sinusoidal_encoding of the steps 0..T-1.
  Depends only on the step t, not on T."""
  return sinusoidal_encoding(jnp.arange(length, dtype=jnp.float32), width)


def masked_mean(x: Array, lengths: Array) -> Array:
  """Mean over the first lengths[b] steps of each row: (B, T, D), (B,) -> (B, D); a row with no
  real step gives zeros, and padded steps are ignored even when NaN."""
  valid = length_mask(lengths, x.shape[1])                           # (B, T)
  total = jnp.sum(jnp.where(valid[..., None], x, 0), axis=1)       # (B, D)
  return total / jnp.maximum(jnp.sum(valid, -1, keepdims=True), 1).astype(total.dtype)


def _stream_lengths(inputs, stream: str, batch: int, steps: int) -> tuple[Array, Array]:
  """(B,) int32 lengths clipped to [0, T] and (B,) bool presence of `stream` in `inputs`."""
  n = inputs.get(f"{stream}_length")
  n = jnp.full((batch,), steps, jnp.int32) if n is None else jnp.asarray(n, jnp.int32)
  present = inputs.get(f"{stream}_present")
  present = jnp.ones((batch,), bool) if present is None else jnp.asarray(present, bool)
  for key, v in ((f"{stream}_length", n), (f"{stream}_present", present)):
    if v.shape != (batch,):
      raise ValueError(f"inputs[{key!r}] must have shape ({batch},) like inputs[{stream!r}], got "
                       f"{v.shape}")
  return jnp.clip(n, 0, steps), present


class StreamEmbed(nn.Module):
  """One stream of the input dict -> (embedded (B, T, width), lengths (B,) int32).

  Continuous features (B, T, F) go through a Dense layer, tokens (B, T) (when vocab_size is set)
  through nn.Embed; sinusoidal positions are added: of the step index (positions="step", as
  Vaswani et al. 2017) or of the step's normalised time (positions="time": time_positions with
  time_scale, so the same place in the story gets the same position in every stream, whatever its
  rate). Rows whose `{stream}_present` is False have their real steps replaced by a learned mask
  token and at least one real step (lengths max(n, 1)). Padded steps are 0.
  """
  stream: str
  width: int
  vocab_size: int | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  positions: str = "step"
  time_scale: float = 12.0

  @nn.compact
  def __call__(self, inputs):
    if self.stream not in inputs:
      raise ValueError(f"the input has no stream {self.stream!r}; it has keys {sorted(inputs)}")
    x = jnp.asarray(inputs[self.stream])
    want = 2 if self.vocab_size else 3
    if x.ndim != want:
      kind = "(batch, steps) tokens" if self.vocab_size else "(batch, steps, features)"
      raise ValueError(f"stream {self.stream!r} must be a {kind} array, got shape {x.shape}"
                       + ("" if self.vocab_size else "; a token stream needs an entry in "
                          "vocab_sizes"))
    b, t = x.shape[:2]
    n, present = _stream_lengths(inputs, self.stream, b, t)
    valid = length_mask(n, t)                                         # (B, T)
    if self.vocab_size:
      e = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                   embedding_init=logical(nn.initializers.normal(1.0), "vocab", "embed"),
                   name="embed")(jnp.where(valid, x, 0))              # (B, T) -> (B, T, D)
    else:
      x = jnp.where(valid[..., None], x, 0).astype(self.dtype)
      e = named_dense(self.width, (None, "embed"), self.dtype, self.param_dtype, "proj")(x)
    if self.positions == "step":
      e = e + sinusoidal_positions(t, self.width).astype(e.dtype)
    elif self.positions == "time":
      e = e + sinusoidal_encoding(time_positions(n, t, self.time_scale), self.width).astype(e.dtype)
    else:
      raise ValueError(f"positions={self.positions!r}: expected 'step' (the step index) or "
                       "'time' (the step's normalised time)")
    token = self.param("mask_token", logical(nn.initializers.normal(1.0), "embed"),
                       (self.width,), self.param_dtype)
    n = jnp.where(present, n, jnp.maximum(n, min(t, 1)))
    valid = length_mask(n, t)
    e = jnp.where(present[:, None, None], e, token.astype(e.dtype))
    return jnp.where(valid[..., None], e, 0), n


class _SequenceModel(nn.Module):
  """The attributes every sequence classifier shares, and its embedding and head helpers.

  Attributes:
    streams: the input streams the model reads (the others are ignored).
    num_classes: logits per example.
    width, depth, num_heads, mlp_ratio: the architecture (hidden width; layers per encoder or
      per-step MLP; attention heads; feed-forward width / width).
    vocab_sizes: (stream, vocabulary size) pairs of the token streams.
    positions, time_scale: what the sinusoidal positions of every stream encode (StreamEmbed):
      "step" the step index; "time" the normalised time, [0, 1] spanning time_scale units.
  """
  streams: tuple[str, ...] = DEFAULT_STREAMS
  num_classes: int = 2
  width: int = 32
  depth: int = 1
  num_heads: int = 2
  mlp_ratio: int = 2
  vocab_sizes: tuple[tuple[str, int], ...] = (("words", 26),)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  positions: str = "step"
  time_scale: float = 12.0

  def _embed(self, inputs, stream: str):
    return StreamEmbed(stream, self.width, dict(self.vocab_sizes).get(stream),
                       self.dtype, self.param_dtype, self.positions, self.time_scale,
                       name=f"embed_{stream}")(inputs)

  def _encode(self, x, lengths, name: str):
    """Self-attention encoder with key padding, then LayerNorm: (B, T, W) -> (B, T, W)."""
    x = Encoder(self.depth, self.num_heads, self.mlp_ratio * x.shape[-1], dtype=self.dtype,
                param_dtype=self.param_dtype, name=name)(x, lengths)
    return LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=f"{name}_ln")(x)

  def _step_mlp(self, h, prefix: str):
    """depth Dense(width) + GELU layers applied to each step alone (no mixing across time):
    (B, T, F) -> (B, T, width); layers named {prefix}_0, {prefix}_1, ..."""
    for i in range(self.depth):
      h = nn.gelu(named_dense(self.width, (None, "mlp"), self.dtype, self.param_dtype,
                              f"{prefix}_{i}")(h))
    return h

  def _mlp_head(self, x):
    """(B, D) -> hidden Dense(width) + GELU -> (B, num_classes) float32 logits."""
    return MlpHead((self.width,), self.num_classes, "gelu", "classes", self.dtype,
                   self.param_dtype, name="head")(x).astype(jnp.float32)

  def _check_streams(self, minimum: int = 1):
    if len(self.streams) < minimum or len(set(self.streams)) != len(self.streams):
      raise ValueError(f"{type(self).__name__} needs at least {minimum} distinct streams, got "
                       f"streams={self.streams!r}")


class Unimodal(_SequenceModel):
  """One stream: StreamEmbed, a pre-LN self-attention encoder (Vaswani et al. 2017) with key
  padding, masked mean pool, Dense head: inputs -> (B, num_classes). Reads `stream`, or the one
  name in `streams` when stream is None."""
  stream: str | None = None

  def _pooled(self, inputs):
    """(B, width): the pooled encoder output (what the head reads)."""
    if self.stream is None and len(self.streams) != 1:
      raise ValueError(f"Unimodal reads one stream: set stream=... or streams=(name,), got "
                       f"streams={self.streams!r}")
    stream = self.stream or self.streams[0]
    e, n = self._embed(inputs, stream)                         # (B, T, W), (B,)
    return masked_mean(self._encode(e, n, "encoder"), n)              # (B, T, W) -> (B, W)

  @nn.compact
  def __call__(self, inputs):
    h = self._pooled(inputs)
    return named_dense(self.num_classes, ("embed", "classes"), self.dtype, self.param_dtype,
                       "head")(h).astype(jnp.float32)


class LateFusion(_SequenceModel):
  """Decision-level (late) fusion of sequences: one Unimodal branch per stream ('branch_{stream}',
  each its own embedding, encoder and head), logits summed, y = sum_s f_s(x_s) (the additive
  baseline of e.g. Baltrusaitis et al. 2019's survey; no cross-modal interaction)."""

  @nn.compact
  def __call__(self, inputs):
    self._check_streams()
    kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(_SequenceModel)
          if f.name not in ("streams", "parent", "name")}      # every shared setting, positions too
    logits = [Unimodal(streams=(s,), stream=s, name=f"branch_{s}", **kw)(inputs)
              for s in self.streams]
    return functools.reduce(jnp.add, logits)                          # (B, num_classes)


class EarlyFusion(_SequenceModel):
  """Early fusion after explicit alignment: every stream is embedded on its own clock (StreamEmbed,
  so the mask token of a missing stream is what gets aligned), the other streams' embedded steps
  are averaged onto the reference stream's steps (align_to_reference: the hard DTW path, Sakoe &
  Chiba 1978; an entropic OT plan, Cuturi 2013, as a barycentric projection; or "none", uniform
  time-stretching), concatenated per step with the reference, then a per-step MLP (no temporal
  mixing), a masked mean over the reference's steps and a head.

  The alignment is aligner(reference_features, reference_length, other_features, other_length,
  values, method, **settings): mmjax.align.align_to_reference (a module attribute, so the models
  package does not import the align package, whose attention readers import models). It is
  computed from features_fn(inputs) -> {stream: (B, T, C)} (same C for all; e.g.
  per-step evidence over shared contents), under stop_gradient: it is neither learned nor
  differentiated; the gradient reaches the embeddings through the averages. A row where the
  reference or the other stream is missing (`{stream}_present` False) is aligned by time-stretching
  instead, so a missing stream's features are never read.

  Attributes (besides _SequenceModel's):
    align: "dtw", "ot" or "none" (the aligner's method).
    aligner: mmjax.align.align_to_reference, or a function of its signature.
    reference: the stream whose clock the others are aligned to (one of streams).
    features_fn: a hashable module-level function giving the alignment features (unused for
      "none").
    cost, epsilon, num_iters, tau: see mmjax.align.alignment_weights.
  """
  align: str = "dtw"
  aligner: Callable | None = None
  reference: str = "words"
  features_fn: Callable | None = None
  cost: str = "cosine"
  epsilon: float = 0.05
  num_iters: int = 100
  tau: float | None = None

  @nn.compact
  def __call__(self, inputs):
    self._check_streams()
    if self.aligner is None:
      raise ValueError("EarlyFusion needs aligner=mmjax.align.align_to_reference (or a function "
                       "of its signature)")
    if self.reference not in self.streams:
      raise ValueError(f"EarlyFusion(reference={self.reference!r}) must be one of the streams it "
                       f"reads, {self.streams!r}")
    if self.align != "none" and self.features_fn is None:
      raise ValueError(f"EarlyFusion(align={self.align!r}) needs features_fn(inputs) -> {{stream: "
                       f"(B, T, C)}} to compute the alignment cost")
    embedded = {s: self._embed(inputs, s) for s in self.streams}
    e_ref, n_ref = embedded[self.reference]                           # (B, Tr, W), (B,)
    feats = {} if self.align == "none" else self.features_fn(inputs)
    present = {s: _stream_lengths(inputs, s, e_ref.shape[0], embedded[s][0].shape[1])[1]
               for s in self.streams}
    parts = [e_ref]
    f_ref = e_ref if self.align == "none" else self._features(feats, self.reference, e_ref)
    for s in self.streams:
      if s == self.reference:
        continue
      e, n = embedded[s]                                              # (B, To, W)
      f = None if self.align == "none" else self._features(feats, s, e)
      parts.append(self.aligner(f_ref, n_ref, f, n, e, self.align, cost=self.cost,
                                      epsilon=self.epsilon, num_iters=self.num_iters,
                                      tau=self.tau, reference_present=present[self.reference],
                                      other_present=present[s]).astype(e.dtype))  # (B, Tr, W)
    h = self._step_mlp(jnp.concatenate(parts, -1), "step")           # (B, Tr, M W) -> (B, Tr, W)
    return self._mlp_head(masked_mean(h, n_ref))                      # (B, W) -> (B, classes)

  @staticmethod
  def _features(feats, stream: str, like):
    if stream not in feats:
      raise ValueError(f"features_fn returned no features for stream {stream!r} (it has "
                       f"{sorted(feats)})")
    f = feats[stream]
    if f.ndim != 3 or f.shape[:2] != like.shape[:2]:
      raise ValueError(f"features_fn()[{stream!r}] must be (B, T, C) with (B, T) = "
                       f"{like.shape[:2]} like the stream, got shape {f.shape}")
    return f


class PooledFusion(_SequenceModel):
  """Tensor fusion of pooled streams: per stream StreamEmbed, a per-step MLP (depth GELU layers),
  masked mean pool and a Dense to fusion_dim; then TFN (Zadeh et al. 2017, "Tensor Fusion Network
  for Multimodal Sentiment Analysis") or LMF (Liu et al. 2018, "Efficient Low-rank Multimodal
  Fusion with Modality-Specific Factors") to width, and an MLP head. Pooling first, it sees which
  contents occur in each stream, but not which co-occur in time.

  Attributes (besides _SequenceModel's): fusion ("tensor" or "lowrank"), fusion_dim (per-stream
  size entering the fusion: TFN's tensor has (fusion_dim + 1) ** M entries), rank (LMF).
  """
  fusion: str = "tensor"
  fusion_dim: int = 8
  rank: int = 4

  @nn.compact
  def __call__(self, inputs):
    self._check_streams(2)
    if self.fusion not in FUSIONS:
      raise ValueError(f"PooledFusion(fusion={self.fusion!r}): expected one of {FUSIONS}")
    zs = []
    for s in self.streams:
      h, n = self._embed(inputs, s)                                   # (B, T, W)
      h = self._step_mlp(h, f"{s}_step")
      zs.append(named_dense(self.fusion_dim, ("mlp", "embed"), self.dtype, self.param_dtype,
                            f"{s}_pool")(masked_mean(h, n)))         # (B, W) -> (B, fusion_dim)
    if self.fusion == "tensor":
      fused = TensorFusion(self.width, self.dtype, self.param_dtype, name="fusion")(zs)
    else:
      fused = LowRankFusion(self.width, self.rank, self.dtype, self.param_dtype,
                            name="fusion")(zs)
    return self._mlp_head(nn.gelu(fused))                             # (B, W) -> (B, classes)


class MulT(_SequenceModel):
  """Multimodal Transformer (Tsai et al. 2019, "Multimodal Transformer for Unaligned Multimodal
  Language Sequences"): for each target stream t, a CrossModalTransformer s -> t (depth blocks,
  key padding by the source's lengths) from every other stream s; their outputs are concatenated
  per target step, (B, T_t, (M - 1) width), passed through a self-attention encoder, masked-mean
  pooled (the paper takes the last step; the mean is padding-safe), and the targets' vectors are
  concatenated into an MLP head. Reads at least two streams; num_heads must divide width.
  """

  @nn.compact
  def __call__(self, inputs):
    self._check_streams(2)
    embedded = {s: self._embed(inputs, s) for s in self.streams}
    pooled = []
    for t in self.streams:
      e_t, n_t = embedded[t]                                          # (B, T_t, W)
      cross = [CrossModalTransformer(self.depth, self.num_heads, self.mlp_ratio * self.width,
                                     dtype=self.dtype, param_dtype=self.param_dtype,
                                     name=f"cross_{s}_to_{t}")(e_t, *embedded[s])
               for s in self.streams if s != t]                       # each (B, T_t, W)
      h = self._encode(jnp.concatenate(cross, -1), n_t, f"self_{t}")  # (B, T_t, (M-1) W)
      pooled.append(masked_mean(h, n_t))
    return self._mlp_head(jnp.concatenate(pooled, -1))                # (B, M (M-1) W) -> (B, C)


class GraphClassifier(_SequenceModel):
  """Graph fusion over modality-time nodes: StreamEmbed per stream, then `graph`, a module called
  as graph(xs: {stream: (B, T, width)}, lengths: {stream: (B,)}) -> (B, D) pooled graph features
  (e.g. MTAG, Yang et al. 2021, "MTAG: Modal-Temporal Attention Graph for Unaligned Human
  Multimodal Language Sequences", in mmjax.models.mtag), then an MLP head."""
  graph: nn.Module | None = None

  @nn.compact
  def __call__(self, inputs):
    self._check_streams()
    if self.graph is None:
      raise ValueError("GraphClassifier needs graph=<module>(xs, lengths) -> (B, D), e.g. "
                       "mmjax.models.mtag's MTAG")
    embedded = {s: self._embed(inputs, s) for s in self.streams}
    h = self.graph({s: e for s, (e, _) in embedded.items()},
                   {s: n for s, (_, n) in embedded.items()})           # (B, D)
    return self._mlp_head(h)


SEQUENCE_MODELS = {
    "unimodal": Unimodal,
    "late": LateFusion,
    "early": EarlyFusion,
    "pooled": PooledFusion,
    "mult": MulT,
    "graph": GraphClassifier,
}
