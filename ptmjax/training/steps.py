"""The pure train step: masked-LM corruption, the weighted losses of the heads, one optimizer
update. State and batch in, new state and a metrics dict out; the step number is folded
into the RNG so a resumed run draws the same masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ptmjax.data import tokenizer as tok
from ptmjax.models import ModelConfig
from ptmjax.training import losses


def mask_tokens(rng, tokens, residue, cfg: ModelConfig, tokenizer: tok.Tokenizer, prob: float):
  """BERT masking of residue tokens: 80 % <mask>, 10 % random residue, 10 % unchanged."""
  k1, k2, k3 = jax.random.split(rng, 3)
  chosen = residue & (jax.random.uniform(k1, tokens.shape) < prob)
  u = jax.random.uniform(k2, tokens.shape)
  aa_ids = jnp.array([tokenizer.id(a) for a in 'ACDEFGHIKLMNPQRSTVWY'], jnp.int32)
  random_aa = aa_ids[jax.random.randint(k3, tokens.shape, 0, 20)]
  new = jnp.where(u < 0.8, cfg.mask_id, jnp.where(u < 0.9, random_aa, tokens))
  return jnp.where(chosen, new, tokens), chosen


def replace_tokens(rng, tokens, real, vocab_size: int, prob: float):
  """ProteinBERT's corruption: each real token (specials included) is replaced by a
  uniformly random token of the whole vocabulary with probability `prob` (0.05 in the
  original); the loss then covers every real position, not only the replaced ones.

  Returns:
    (corrupted tokens, bool [B, T] positions the loss covers).
  """
  k1, k2 = jax.random.split(rng)
  chosen = real & (jax.random.uniform(k1, tokens.shape) < prob)
  random_tokens = jax.random.randint(k2, tokens.shape, 0, vocab_size, tokens.dtype)
  return jnp.where(chosen, random_tokens, tokens), real


def loss_weights(
  cand_table, tokens, residue, channel_mask, residue_index=None, position_limits=None
):
  """float [B, T, channels]: the PTM loss's weight of each token and channel.

  A token counts for a channel if it is a residue (`residue`, bool [B, T]), of a candidate
  type (`cand_table[tokens]`) and, with `position_limits`, at a protein position
  (`residue_index`, 0-based, from the pipeline) below the channel's limit; then it weighs
  the channel's loss weight. The metrics' `Candidates.mask` is the same set.
  """
  candidate = jnp.asarray(cand_table)[tokens] & residue[..., None]
  if position_limits is not None:
    candidate &= residue_index[..., None] < jnp.asarray(position_limits)
  return candidate.astype(jnp.float32) * jnp.asarray(channel_mask, jnp.float32)


def make_train_step(
  graphdef,
  config,
  tokenizer,
  cand_table,
  pos_weight,
  channel_mask,
  wrt=nnx.Param,
  position_limits=None,
):
  """The pure train step `(state, batch, step) -> (state, metrics)` for `jax.jit`.

  Args:
    graphdef: the (model, optimizer) graph definition; `state` is its state.
    config: the training config (its `loss`, `data` and `seed` sections).
    tokenizer: the model's tokenizer (masking draws residue tokens from it).
    cand_table: bool [vocab, channels], `Candidates.token_table`.
    pos_weight: float [channels], weight of positive entries.
    channel_mask: float [channels], each channel's loss weight (0: not trained).
    wrt: the nnx filter of the parameters the optimizer updates (gradients are taken
      for those only; LoRA: the adapters and the head).
    position_limits: int [channels] or None, `Candidates.position_limits`: a token trains
      channel c only if its place in the protein (`batch['residue_index']`) is below it.
  """
  lc = config.loss
  heads = tuple(
    h for h, w in (('ptm', lc.ptm_weight), ('count', lc.count_weight), ('mlm', lc.mlm_weight)) if w
  )
  num_segments = config.data.max_segments if config.data.mode == 'pack' else 1
  rng0 = jax.random.key(config.seed)
  channel_mask = jnp.asarray(channel_mask, jnp.float32)
  limited = position_limits is not None and bool(
    (np.asarray(position_limits) < np.iinfo(np.int32).max).any()
  )

  def loss_fn(model, batch, step):
    tokens, seg = batch['tokens'], batch['segment_ids']
    residue = model.residue_mask(tokens, seg)
    inputs, chosen = tokens, None
    if lc.mlm_weight and model.cfg.family == 'proteinbert':
      inputs, chosen = replace_tokens(
        jax.random.fold_in(rng0, step), tokens, seg > 0, model.cfg.vocab_size, lc.mlm_prob
      )
    elif lc.mlm_weight:
      inputs, chosen = mask_tokens(
        jax.random.fold_in(rng0, step), tokens, residue, model.cfg, tokenizer, lc.mlm_prob
      )
    out = model(inputs, seg, batch['positions'], heads=heads, num_segments=num_segments)
    total, aux = 0.0, {}
    if lc.ptm_weight:
      weights = loss_weights(
        cand_table,
        tokens,
        residue,
        channel_mask,
        batch['residue_index'] if limited else None,
        position_limits if limited else None,
      )
      loss, n = losses.ptm_loss(
        out['ptm'],
        batch['labels'],
        weights,
        pos_weight=pos_weight,
        label_smoothing=lc.label_smoothing,
        focal_gamma=lc.focal_gamma,
      )
      total += lc.ptm_weight * loss
      aux['ptm_loss'], aux['scored'] = loss, n
    if lc.count_weight:
      loss = losses.count_loss(
        out['count'], batch['counts'], batch['counts_valid'] & (channel_mask > 0)
      )
      total += lc.count_weight * loss
      aux['count_loss'] = loss
    if lc.mlm_weight:
      loss = losses.mlm_loss(out['mlm'], tokens, chosen)
      total += lc.mlm_weight * loss
      aux['mlm_loss'] = loss
    aux['residues'] = residue.sum()
    return total, aux

  def train_step(state, batch, step):
    model, opt = nnx.merge(graphdef, state)
    grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)
    (loss, aux), grads = grad_fn(model, batch, step)
    opt.update(model, grads)
    aux['loss'] = loss
    aux['grad_norm'] = global_norm(grads)
    return nnx.state((model, opt)), aux

  return train_step


def global_norm(tree):
  """The L2 norm of every leaf together, in float32."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))
