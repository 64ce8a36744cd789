"""Per-residue PTM loss (weighted, label-smoothed, optionally focal), count and MLM losses.

Each PTM channel is a binary task with its own logit. A residue counts for a
channel only where its label is known (not -1), it is a residue token (not
padding, <cls> or <eos>) and, when candidate residues are configured, its
amino acid can carry that modification (S/T/Y for phosphorylation, ...): the
`weights` built from `ptmjax.data.candidates.Candidates.token_table`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def ptm_loss(
  logits,
  labels,
  weights,
  *,
  pos_weight=1.0,
  label_smoothing: float = 0.0,
  focal_gamma: float = 0.0,
):
  """Mean binary cross-entropy over the scored (residue, channel) entries.

  Args:
    logits: float [B, T, C].
    labels: int [B, T, C] in {-1, 0, 1}; -1 is ignored.
    weights: float or bool [B, T, C], 0 where an entry must not count
      (padding, special tokens, non-candidate residues).
    pos_weight: scalar or [C], weight of positive entries (class imbalance).
    label_smoothing: targets become y (1 - s) + s / 2.
    focal_gamma: > 0 multiplies each entry by (1 - p_true) ** gamma.

  Returns:
    (loss scalar, number of scored entries).
  """
  logits = logits.astype(jnp.float32)
  known = (labels >= 0) & (weights > 0)
  y = (labels == 1).astype(jnp.float32)
  target = y * (1 - label_smoothing) + 0.5 * label_smoothing
  entry = optax.sigmoid_binary_cross_entropy(logits, target)
  if focal_gamma:
    p = jax.nn.sigmoid(logits)
    p_true = jnp.where(y > 0, p, 1 - p)
    entry = entry * (1 - p_true) ** focal_gamma
  w = jnp.where(y > 0, jnp.asarray(pos_weight, jnp.float32), 1.0) * weights * known
  count = known.sum()
  return (entry * w).sum() / jnp.maximum(count, 1), count


def count_loss(pred, counts, valid):
  """Mean squared error between predicted and true log1p(site counts) per protein and channel.

  pred, counts: [B, S, C]; valid: [B, S, C] bool (known counts of real proteins).
  """
  err = (pred - jnp.log1p(counts.astype(jnp.float32))) ** 2
  return jnp.where(valid, err, 0).sum() / jnp.maximum(valid.sum(), 1)


def mlm_loss(logits, targets, mask):
  """Cross-entropy on masked positions. targets int [B, T]; mask bool [B, T]."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return jnp.where(mask, ce, 0).sum() / jnp.maximum(mask.sum(), 1)
