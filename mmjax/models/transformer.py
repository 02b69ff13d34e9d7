"""Transformer layers shared by the ViT, the text tower and the cross-modal attention models.

Pre-LayerNorm blocks (Vaswani et al. 2017; Radford et al. 2019 for pre-LN) with attention through
jax.nn.dot_product_attention, so implementation='cudnn' selects the fused cuDNN kernel on GPU and
'xla' (or None: XLA decides) runs anywhere. Compute is in `dtype` (bf16 on accelerators) with params
in `param_dtype` (fp32); layer norms reduce in fp32. Every parameter has logical axis names
(see mmjax.parallel.LOGICAL_RULES). LayerNorm, the activations and the logical-name helpers live in
mmjax.models.common.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.common import Dtype, LayerNorm, activation, logical

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Mlp(nn.Module):
  """Two-layer feed-forward block: (..., D) -> (..., mlp_dim) -> (..., D)."""
  mlp_dim: int
  act: str = "gelu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    h = dense(self.mlp_dim, kernel_init=logical(nn.initializers.xavier_uniform(), "embed", "mlp"),
              bias_init=logical(nn.initializers.zeros, "mlp"), name="fc1")(x)
    h = activation(self.act)(h)
    return dense(x.shape[-1], kernel_init=logical(nn.initializers.xavier_uniform(), "mlp", "embed"),
                 bias_init=logical(nn.initializers.zeros, "embed"), name="fc2")(h)


class Attention(nn.Module):
  """Multi-head attention of x (B, T, D) over context (B, S, Dc) (self-attention when None).

  implementation: None (XLA picks), 'xla', or 'cudnn' (GPU; bf16/fp16, head dim <= 256).
  """
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x, context=None, *, is_causal: bool = False, mask=None, kv_lengths=None):
    context = x if context is None else context
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"attention width {width} is not divisible by num_heads={self.num_heads}")
    head_dim = width // self.num_heads
    proj = functools.partial(
        nn.DenseGeneral, features=(self.num_heads, head_dim), dtype=self.dtype,
        param_dtype=self.param_dtype, bias_init=logical(nn.initializers.zeros, "heads", "kv"),
        kernel_init=logical(nn.initializers.xavier_uniform(), "embed", "heads", "kv"))
    q = proj(name="query")(x)                                   # (B, T, N, H)
    k = proj(name="key")(context)                               # (B, S, N, H)
    v = proj(name="value")(context)                             # (B, S, N, H)
    if kv_lengths is not None:
      kv_lengths = jnp.asarray(kv_lengths, jnp.int32)           # (B,) valid keys per row
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                                       key_value_seq_lengths=kv_lengths,
                                       implementation=self.implementation)
    return nn.DenseGeneral(
        width, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=logical(nn.initializers.xavier_uniform(), "heads", "kv", "embed"),
        bias_init=logical(nn.initializers.zeros, "embed"), name="out")(out)


class Block(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + Mlp(LN(x)). (B, T, D) -> (B, T, D)."""
  num_heads: int
  mlp_dim: int
  act: str = "gelu"
  causal: bool = False
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(self, x, kv_lengths=None):
    norm = functools.partial(LayerNorm, epsilon=self.layer_norm_eps, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    y = Attention(self.num_heads, self.dtype, self.param_dtype, self.implementation,
                  name="attn")(norm(name="ln_1")(x), is_causal=self.causal, kv_lengths=kv_lengths)
    x = x + y
    y = Mlp(self.mlp_dim, self.act, self.dtype, self.param_dtype, name="mlp")(norm(name="ln_2")(x))
    x = x + y
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class _ScanBlock(Block):
  """Block with the (carry, broadcast) -> (carry, None) signature nn.scan needs."""

  def __call__(self, x, kv_lengths=None):  # pylint: disable=arguments-differ
    return super().__call__(x, kv_lengths), None


class Encoder(nn.Module):
  """`depth` pre-LN blocks. (B, T, D) -> (B, T, D).

  remat: 'none', 'full' (save nothing, recompute each block) or 'dots' (save matmul outputs).
  scan: stack the blocks' params on a leading 'layers' axis and run them with nn.scan (one block is
    compiled, not `depth`); params then live under 'blocks' instead of 'block_0'...'block_{depth-1}'.
  """
  depth: int
  num_heads: int
  mlp_dim: int
  act: str = "gelu"
  causal: bool = False
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None
  remat: str = "none"
  scan: bool = False

  @nn.compact
  def __call__(self, x, kv_lengths=None):
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"unknown remat {self.remat!r}; expected one of {sorted(REMAT_POLICIES)}")
    kwargs = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, act=self.act, causal=self.causal,
                  layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
                  param_dtype=self.param_dtype, implementation=self.implementation)
    block_cls = _ScanBlock if self.scan else Block
    if self.remat != "none":
      block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan)
    if self.scan:
      stack = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=nn.broadcast, length=self.depth,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(**kwargs, name="blocks")(x, kv_lengths)
      return x
    for i in range(self.depth):
      x = block_cls(**kwargs, name=f"block_{i}")(x, kv_lengths)
    return x
