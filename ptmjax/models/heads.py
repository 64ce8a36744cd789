"""Task heads on the encoder's per-token output: per-residue PTM logits, per-protein
site counts, and the masked-LM head."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ptmjax import sharding as shd
from ptmjax.models.config import ACTIVATIONS, ModelConfig
from ptmjax.models.layers import Dense, layer_norm


def shift_within_segments(x, segment_ids, offset: int):
  """x[:, t + offset] where that token is in the same protein as t, else 0."""
  length = x.shape[1]
  idx = jnp.arange(length) + offset
  valid = (idx >= 0) & (idx < length)
  idx = jnp.clip(idx, 0, length - 1)
  same = (segment_ids[:, idx] == segment_ids) & valid[None] & (segment_ids > 0)
  return jnp.where(same[..., None], x[:, idx], 0)


class PtmHead(nnx.Module):
  """Per-token logits, one per PTM channel (each channel is a binary task)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt, d, h = cfg.compute_dtype, cfg.embed_dim, cfg.head_dim
    self.kind = cfg.ptm_head
    self.radius = cfg.conv_width // 2
    self.act = ACTIVATIONS[cfg.activation]
    if self.kind == 'mlp':
      self.hidden = Dense((d,), (h,), (shd.EMBED, None), rngs=rngs, dtype=dt)
    elif self.kind == 'conv':
      self.hidden = Dense((cfg.conv_width, d), (h,), (None, shd.EMBED, None), rngs=rngs, dtype=dt)
    if self.kind != 'linear':
      self.norm = layer_norm(h, cfg.layer_norm_eps, dt, rngs, name=None)
      self.out = Dense((h,), (cfg.num_ptm_types,), (None, None), rngs=rngs, dtype=dt)
    else:
      self.out = Dense((d,), (cfg.num_ptm_types,), (shd.EMBED, None), rngs=rngs, dtype=dt)

  def __call__(self, x, segment_ids):
    if self.kind == 'conv':
      window = [
        shift_within_segments(x, segment_ids, o) for o in range(-self.radius, self.radius + 1)
      ]
      x = jnp.stack(window, axis=2)
    if self.kind != 'linear':
      x = self.norm(self.act(self.hidden(x)))
    return self.out(x).astype(jnp.float32)


def segment_mean(x, segment_ids, residue_mask, num_segments: int):
  """Mean of x over the residues of each protein: [B, T, D] -> [B, num_segments, D]."""
  onehot = (segment_ids[..., None] == jnp.arange(1, num_segments + 1)) & residue_mask[..., None]
  onehot = onehot.astype(jnp.float32)
  sums = jnp.einsum('bts,btd->bsd', onehot, x.astype(jnp.float32))
  return sums / jnp.maximum(onehot.sum(1), 1)[..., None]


class CountHead(nnx.Module):
  """Per-protein log1p(number of sites) per PTM channel, from the mean residue embedding
  (transformer) or the protein's global vector (ProteinBERT)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    width, name = (
      (cfg.global_dim, shd.MLP) if cfg.family == 'proteinbert' else (cfg.embed_dim, shd.EMBED)
    )
    self.hidden = Dense((width,), (cfg.head_dim,), (name, None), rngs=rngs, dtype=dt)
    self.out = Dense((cfg.head_dim,), (cfg.num_ptm_types,), (None, None), rngs=rngs, dtype=dt)
    self.act = ACTIVATIONS[cfg.activation]

  def __call__(self, pooled):
    return self.out(self.act(self.hidden(pooled))).astype(jnp.float32)


class MlmHead(nnx.Module):
  """ESM/BERT LM head: dense, activation, LayerNorm, decoder (tied or not) + bias."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt, d = cfg.compute_dtype, cfg.embed_dim
    self.dense = Dense((d,), (d,), (shd.EMBED, None), rngs=rngs, dtype=dt)
    self.norm = layer_norm(d, cfg.layer_norm_eps, dt, rngs)
    self.decoder = (
      None
      if cfg.tie_embeddings
      else Dense(
        (d,), (cfg.vocab_size,), (shd.EMBED, shd.VOCAB), rngs=rngs, dtype=dt, use_bias=False
      )
    )
    self.bias = nnx.Param(
      shd.logical(nnx.initializers.zeros_init(), (shd.VOCAB,))(None, (cfg.vocab_size,))
    )
    self.act = ACTIVATIONS[cfg.activation]

  def __call__(self, x, token_embed: nnx.Embed):
    x = self.norm(self.act(self.dense(x)))
    logits = token_embed.attend(x) if self.decoder is None else self.decoder(x)
    return (logits + self.bias[...].astype(logits.dtype)).astype(jnp.float32)
