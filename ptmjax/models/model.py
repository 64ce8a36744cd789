"""The ptmjax model: encoder plus per-residue PTM, per-protein count and MLM heads.

Outputs are per token; `ptmjax.data.tokenizer.Tokenizer.token_outputs_to_residues`
moves them onto residues (residue i is token i + 1, after <cls>).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ptmjax import sharding as shd
from ptmjax.models.encoder import (
  ACTIVATIONS,
  Dense,
  Encoder,
  ModelConfig,
  default_segments,
  layer_norm,
)

HEADS = ('ptm', 'count', 'mlm')


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
  """Per-protein log1p(number of sites) per PTM channel, from the mean residue embedding."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    self.hidden = Dense((cfg.embed_dim,), (cfg.head_dim,), (shd.EMBED, None), rngs=rngs, dtype=dt)
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


class PtmModel(nnx.Module):
  """Encoder with PTM, count and MLM heads.

  Parameter paths start with `encoder/`, `ptm_head/`, `count_head/` or
  `mlm_head/`, which is what freezing and `init_from` skip patterns match.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.ptm_head = PtmHead(cfg, rngs)
    self.count_head = CountHead(cfg, rngs)
    self.mlm_head = MlmHead(cfg, rngs)

  def residue_mask(self, tokens, segment_ids):
    """True on residue tokens: not padding, <cls> or <eos>."""
    cfg = self.cfg
    return (segment_ids > 0) & (tokens != cfg.cls_id) & (tokens != cfg.eos_id)

  def __call__(self, tokens, segment_ids=None, positions=None, *, heads=('ptm',), num_segments=1):
    """Runs the encoder and the requested heads.

    Args:
      tokens: int [B, T].
      segment_ids, positions: see `Encoder.__call__`.
      heads: any of 'ptm', 'count', 'mlm'.
      num_segments: most proteins per row (count head only).

    Returns:
      dict with 'hidden' [B, T, D] and, when asked for, 'ptm' logits
      [B, T, num_ptm_types], 'count' [B, num_segments, num_ptm_types] and
      'mlm' logits [B, T, vocab_size]; heads in float32.
    """
    unknown = set(heads) - set(HEADS)
    if unknown:
      raise ValueError(f'unknown heads {sorted(unknown)}; choose from {HEADS}')
    if segment_ids is None:
      segment_ids = default_segments(tokens, self.cfg.pad_id)
    hidden = self.encoder(tokens, segment_ids, positions)
    out = {'hidden': hidden}
    if 'ptm' in heads:
      out['ptm'] = self.ptm_head(hidden, segment_ids)
    if 'count' in heads:
      pooled = segment_mean(
        hidden, segment_ids, self.residue_mask(tokens, segment_ids), num_segments
      )
      out['count'] = self.count_head(pooled)
    if 'mlm' in heads:
      out['mlm'] = self.mlm_head(hidden, self.encoder.token_embed)
    return out


def create_model(cfg: ModelConfig, seed: int = 0) -> PtmModel:
  """A freshly initialised model on the default device."""
  return PtmModel(cfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))


def abstract_model(cfg: ModelConfig) -> PtmModel:
  """The model's structure with ShapeDtypeStructs instead of arrays."""
  return nnx.eval_shape(lambda: create_model(cfg))
