"""The pure train step: masked-LM corruption, the weighted losses of the heads, one optimizer
update. State and batch in, new state and a metrics dict out; the step number is folded
into the RNG so a resumed run draws the same masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ptmjax.data import tokenizer as tok
from ptmjax.models import ModelConfig
from ptmjax.training import losses
from ptmjax.training.loss_spec import LossSpec


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


def make_train_step(graphdef, spec: LossSpec, tokenizer, wrt=nnx.Param):
  """The pure train step `(state, batch, step) -> (state, metrics)` for `jax.jit`.

  Args:
    graphdef: the (model, optimizer) graph definition; `state` is its state.
    spec: the loss (`LossSpec.from_config`): heads and their weights, channels, class
      weights, candidate residues and position limits.
    tokenizer: the model's tokenizer (masking draws residue tokens from it).
    wrt: the nnx filter of the parameters the optimizer updates (gradients are taken
      for those only; LoRA: the adapters and the head).
  """
  rng0 = jax.random.key(spec.seed)
  channel_mask = jnp.asarray(spec.channel_mask, jnp.float32)
  limits = spec.position_limits

  def loss_fn(model, batch, step):
    tokens, seg = batch['tokens'], batch['segment_ids']
    residue = model.residue_mask(tokens, seg)
    inputs, chosen = tokens, None
    if spec.mlm_weight:
      rng = jax.random.fold_in(rng0, step)
      if model.traits.corruption == 'replace':
        inputs, chosen = replace_tokens(rng, tokens, seg > 0, model.cfg.vocab_size, spec.mlm_prob)
      else:
        inputs, chosen = mask_tokens(rng, tokens, residue, model.cfg, tokenizer, spec.mlm_prob)
    out = model(inputs, seg, batch['positions'], heads=spec.heads, num_segments=spec.num_segments)
    total, aux = 0.0, {}
    if spec.ptm_weight:
      weights = loss_weights(
        spec.cand_table,
        tokens,
        residue,
        channel_mask,
        None if limits is None else batch['residue_index'],
        limits,
      )
      loss, n = losses.ptm_loss(
        out['ptm'],
        batch['labels'],
        weights,
        pos_weight=spec.pos_weight,
        label_smoothing=spec.label_smoothing,
        focal_gamma=spec.focal_gamma,
      )
      total += spec.ptm_weight * loss
      aux['ptm_loss'], aux['scored'] = loss, n
    if spec.count_weight:
      loss = losses.count_loss(
        out['count'], batch['counts'], batch['counts_valid'] & (channel_mask > 0)
      )
      total += spec.count_weight * loss
      aux['count_loss'] = loss
    if spec.mlm_weight:
      loss = losses.mlm_loss(out['mlm'], tokens, chosen)
      total += spec.mlm_weight * loss
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
