"""CLIP-style causal text transformer (Radford et al. 2019 / 2021).

tokens (B, L) -> token + position embeddings -> causal pre-LN encoder -> ln_final
  -> the features at the end-of-text token (B, D).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.common import Dtype, LayerNorm, logical
from mmjax.models.transformer import Encoder


class TextTransformer(nn.Module):
  """Causal text tower pooled at the end-of-text token: (B, L) int tokens -> (B, width).

  Attributes:
    vocab_size, context_length, width, depth, num_heads, mlp_dim: the architecture.
    eot_token_id: pool at the first occurrence of this id; None pools at the largest id in each row
      (OpenAI CLIP, whose end-of-text token has the largest id in its vocabulary).
    token_multiple: pad the sequence to a multiple of this; causal attention keeps the padding out of
      every real position. implementation='cudnn' pads to an even length by itself (cuDNN rejects
      L=77 with is_causal in training).
  """
  vocab_size: int
  context_length: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  eot_token_id: int | None = None
  act: str = "gelu"
  layer_norm_eps: float = 1e-5
  token_multiple: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: str | None = None
  remat: str = "none"
  scan: bool = False

  @nn.compact
  def __call__(self, tokens):
    if tokens.ndim != 2 or tokens.shape[1] > self.context_length:
      raise ValueError(f"TextTransformer expects tokens (batch, length <= {self.context_length}), "
                       f"got shape {tokens.shape}")
    b, n = tokens.shape
    x = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                 embedding_init=logical(nn.initializers.normal(0.02), "vocab", "embed"),
                 name="token_embed")(tokens)                      # (B, L, D)
    pos = self.param("pos_embed", logical(nn.initializers.normal(0.01), "length", "embed"),
                     (self.context_length, self.width), self.param_dtype)
    x = x + pos[:n].astype(x.dtype)
    multiple = max(self.token_multiple, 2 if self.implementation == "cudnn" else 1)
    x = jnp.pad(x, ((0, 0), (0, -n % multiple), (0, 0)))
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.act, True, self.layer_norm_eps,
                self.dtype, self.param_dtype, self.implementation, self.remat, self.scan,
                name="encoder")(x)
    x = LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                  name="ln_final")(x[:, :n])
    if self.eot_token_id is None:
      eot = jnp.argmax(tokens, axis=1)
    else:
      eot = jnp.argmax(tokens == self.eot_token_id, axis=1)
    return x[jnp.arange(b), eot]                                 # (B, D)
