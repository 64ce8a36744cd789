"""A BERT/ESM-family transformer encoder in Flax NNX.

One module covers the two families whose checkpoints ptmjax imports:

* ESM-2: pre-LayerNorm, rotary positions, a final LayerNorm, ESM's
  "token dropout" rescaling of the embeddings.
* BERT / ProtBert: post-LayerNorm, learned absolute positions, token-type
  embedding, LayerNorm on the embeddings.

Rows may pack several proteins: `segment_ids` (0 = padding) stop attention
across proteins and positions restart at 0 for each protein. Every parameter
carries logical axis names (`ptmjax.sharding`); compute may run in bfloat16
with float32 parameters, with attention logits, softmax and LayerNorm
statistics kept in float32. The configuration is `ptmjax.models.config`, the
blocks `layers` and `attention`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ptmjax import sharding as shd
from ptmjax.models.attention import MASK_VALUE, Attention
from ptmjax.models.config import ModelConfig, Traits
from ptmjax.models.heads import MlmHead, segment_mean
from ptmjax.models.layers import INIT, Mlp, default_segments, layer_norm, segment_positions

# ESM was trained masking 15 % of tokens, 80 % of those with <mask>; its
# embeddings are rescaled by (1 - 0.12) / (1 - observed mask ratio).
ESM_MASK_RATIO_TRAIN = 0.15 * 0.8


class EncoderLayer(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    self.attention = Attention(cfg, rngs)
    self.attention_norm = layer_norm(cfg.embed_dim, cfg.layer_norm_eps, dt, rngs)
    self.mlp = Mlp(cfg, rngs)
    self.mlp_norm = layer_norm(cfg.embed_dim, cfg.layer_norm_eps, dt, rngs)
    self.dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)
    self.pre_layer_norm = cfg.pre_layer_norm

  def __call__(self, x, bias, positions):
    if self.pre_layer_norm:
      x = x + self.dropout(self.attention(self.attention_norm(x), bias, positions))
      return x + self.dropout(self.mlp(self.mlp_norm(x)))
    x = self.attention_norm(x + self.dropout(self.attention(x, bias, positions)))
    return self.mlp_norm(x + self.dropout(self.mlp(x)))


def _per_segment_mean(values, segment_ids):
  """For each token, the mean of `values` over the real tokens of its segment; O(B*T)."""
  b, t = segment_ids.shape
  # Segment s of row r gets the global id r * (t + 1) + s; padding (s = 0) is ignored.
  ids = (jnp.arange(b)[:, None] * (t + 1) + segment_ids).reshape(-1)
  real = (segment_ids > 0).reshape(-1).astype(jnp.float32)
  num = jax.ops.segment_sum(values.reshape(-1).astype(jnp.float32) * real, ids, b * (t + 1))
  den = jax.ops.segment_sum(real, ids, b * (t + 1))
  return (num / jnp.maximum(den, 1))[ids].reshape(b, t)


class Encoder(nnx.Module):
  """Tokens -> contextual embeddings [B, T, embed_dim]."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt = cfg.compute_dtype
    self.token_embed = nnx.Embed(
      cfg.vocab_size,
      cfg.embed_dim,
      dtype=dt,
      embedding_init=shd.logical(INIT, (shd.VOCAB, shd.EMBED)),
      rngs=rngs,
    )
    self.position_embed = (
      nnx.Embed(
        cfg.max_len,
        cfg.embed_dim,
        dtype=dt,
        embedding_init=shd.logical(INIT, (None, shd.EMBED)),
        rngs=rngs,
      )
      if cfg.positions == 'learned'
      else None
    )
    self.token_type_embed = (
      nnx.Embed(
        cfg.num_token_types,
        cfg.embed_dim,
        dtype=dt,
        embedding_init=shd.logical(INIT, (None, shd.EMBED)),
        rngs=rngs,
      )
      if cfg.num_token_types
      else None
    )
    self.embed_norm = (
      layer_norm(cfg.embed_dim, cfg.layer_norm_eps, dt, rngs) if cfg.embed_layer_norm else None
    )
    self.embed_dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)
    self.layers = nnx.List([EncoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = (
      layer_norm(cfg.embed_dim, cfg.layer_norm_eps, dt, rngs) if cfg.final_layer_norm else None
    )

  def embed(self, tokens, segment_ids, positions):
    cfg = self.cfg
    x = self.token_embed(tokens)
    real = segment_ids > 0
    if cfg.token_dropout:
      is_mask = tokens == cfg.mask_id
      x = jnp.where(is_mask[..., None], 0, x)
      # Mask ratio per protein (ESM computes it per row; a packed row holds
      # several proteins, and per protein is what a row of one protein gets).
      ratio = _per_segment_mean(is_mask, segment_ids)
      scale = (1 - ESM_MASK_RATIO_TRAIN) / (1 - ratio)
      x = (x.astype(jnp.float32) * scale[..., None]).astype(x.dtype)
    if self.position_embed is not None:
      x = x + self.position_embed(positions)
    if self.token_type_embed is not None:
      x = x + self.token_type_embed.embedding[0].astype(x.dtype)
    if self.embed_norm is not None:
      x = self.embed_norm(x)
    x = jnp.where(real[..., None], x, 0)
    return self.embed_dropout(x)

  def __call__(self, tokens, segment_ids=None, positions=None):
    """Encodes a batch.

    Args:
      tokens: int [B, T].
      segment_ids: int [B, T], 1, 2, ... per protein of a packed row, 0 on
        padding. Default: one protein per row, padding where tokens == pad_id.
      positions: int [B, T]. Default: restart at 0 for each segment.

    Returns:
      [B, T, embed_dim] in the compute dtype.
    """
    cfg = self.cfg
    if segment_ids is None:
      segment_ids = default_segments(tokens, cfg.pad_id)
    if positions is None:
      positions = segment_positions(segment_ids)
    if cfg.positions == 'learned' and tokens.shape[1] > cfg.max_len:
      raise ValueError(f'{tokens.shape[1]} tokens > max_len {cfg.max_len} of learned positions')
    x = self.embed(tokens, segment_ids, positions)
    # Additive mask: attend only within the same protein, never to padding.
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
    bias = jnp.where(allowed, 0.0, MASK_VALUE)[:, None].astype(jnp.float32)
    for layer in self.layers:
      if cfg.remat:
        x = nnx.remat(lambda mdl, h: mdl(h, bias, positions))(layer, x)
      else:
        x = layer(x, bias, positions)
    if self.final_norm is not None:
      x = self.final_norm(x)
    return x


# --- the family interface (ptmjax.models.model.FAMILIES) ------------------------------
Model = Encoder
# BERT's 80/10/10 masking; positions, so long proteins go in `max_len` windows.
TRAITS = Traits(
  corruption='mask', whole_sequences=False, protein_outputs=(), reference_padding=False
)


def lm_head(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
  return MlmHead(cfg, rngs)


def extra_heads(cfg: ModelConfig, rngs: nnx.Rngs) -> dict:
  return {}


def outputs(model, tokens, segment_ids, positions, heads, num_segments, annotations) -> dict:
  """`PtmModel.__call__` for a transformer: the count head reads the mean of each
  protein's residue vectors; the LM head is tied to the token embedding."""
  if 'annotations' in heads:
    raise ValueError("the 'annotations' head is ProteinBERT's")
  hidden = model.encoder(tokens, segment_ids, positions)
  out = {'hidden': hidden}
  if 'ptm' in heads:
    out['ptm'] = model.ptm_head(hidden, segment_ids)
  if 'count' in heads:
    mask = model.residue_mask(tokens, segment_ids)
    out['count'] = model.count_head(segment_mean(hidden, segment_ids, mask, num_segments))
  if 'mlm' in heads:
    out['mlm'] = model.mlm_head(hidden, model.encoder.token_embed)
  return out
