"""The loss as a value: which heads train with what weight, the PTM channels and their
class weights, and which residues count (`LossSpec`), built once from the config and
the training data, then handed to the train step (`steps.make_train_step`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ptmjax.data import ptm_types
from ptmjax.data.candidates import Candidates, outside_dict
from ptmjax.errors import UsageError


def channel_loss_weights(config, channels) -> np.ndarray:
  """float [NUM_TYPES]: the loss weight of each channel, 0 for channels not trained.

  `loss.channel_weights` ('phosphorylation=2,acetylation=0.5'; others 1) moves the
  loss towards the channels a study reports instead of those with most candidates."""
  w = np.isin(np.array(ptm_types.PTM_NAMES), channels).astype(np.float32)
  spec = config.loss.get('channel_weights') or ''
  pairs = spec.items() if isinstance(spec, dict) else (kv.split('=') for kv in spec.split(','))
  for kv in pairs:
    kv = tuple(kv)
    if kv == ('',):
      continue
    if len(kv) != 2 or kv[0].strip() not in ptm_types.INDEX:
      raise UsageError(
        f'loss.channel_weights {spec!r}: expected channel=WEIGHT[,...] with channels from '
        f'{ptm_types.PTM_NAMES}'
      )
    w[ptm_types.INDEX[kv[0].strip()]] *= float(kv[1])
  return w


def channels_and_weights(config, train_source, candidates: Candidates):
  """The channels trained (only those with both classes in the training data), the
  positive-class weight per channel ('auto': negatives / positives, capped), and
  {channel: training sites outside its candidates} (never trained on)."""
  channels = list(config.loss.channels or ptm_types.PTM_NAMES)
  pos_weight = config.loss.pos_weight
  outside = {}
  if config.loss.ptm_weight or config.loss.count_weight:
    pos, neg, out = candidates.site_counts(train_source)
    outside = outside_dict(out)
    channels = [c for c in channels if pos[ptm_types.INDEX[c]] and neg[ptm_types.INDEX[c]]]
  if pos_weight == 'auto' and not config.loss.ptm_weight:
    pos_weight = 1.0  # no PTM loss: nothing to weigh
  elif isinstance(pos_weight, str) and pos_weight != 'auto':
    pos_weight = float(pos_weight)  # '5' from the command line
  if pos_weight == 'auto':
    pos_weight = np.minimum(neg / np.maximum(pos, 1), config.loss.max_pos_weight).astype(np.float32)
  pos_weight = np.broadcast_to(np.asarray(pos_weight, np.float32), (ptm_types.NUM_TYPES,))
  return channels, pos_weight, outside


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """Everything the train step's loss reads, constants of the jitted step.

  heads: the heads trained ('ptm', 'count', 'mlm'), those of non-zero weight.
  pos_weight: float [NUM_TYPES], weight of positive entries per channel.
  channel_mask: float [NUM_TYPES], each channel's loss weight (0: not trained).
  cand_table: bool [vocab, NUM_TYPES], `Candidates.token_table`.
  position_limits: int [NUM_TYPES] or None, `Candidates.position_limits` when some
    channel scores only the first residues of a protein.
  num_segments: most proteins per row (packing), 1 otherwise.
  seed: the MLM corruption's RNG seed (the step number is folded in).
  """

  ptm_weight: float
  count_weight: float
  mlm_weight: float
  mlm_prob: float
  label_smoothing: float
  focal_gamma: float
  pos_weight: np.ndarray
  channel_mask: np.ndarray
  cand_table: np.ndarray
  position_limits: np.ndarray | None
  num_segments: int
  seed: int

  @property
  def heads(self) -> tuple[str, ...]:
    weights = (('ptm', self.ptm_weight), ('count', self.count_weight), ('mlm', self.mlm_weight))
    return tuple(h for h, w in weights if w)

  @classmethod
  def from_config(cls, config, tokenizer, candidates: Candidates, pos_weight, channel_mask):
    lc = config.loss
    limits = candidates.position_limits() if candidates.positions else None
    if limits is not None and not (np.asarray(limits) < np.iinfo(np.int32).max).any():
      limits = None  # no channel is limited: the step needs no residue positions
    return cls(
      ptm_weight=lc.ptm_weight,
      count_weight=lc.count_weight,
      mlm_weight=lc.mlm_weight,
      mlm_prob=lc.mlm_prob,
      label_smoothing=lc.label_smoothing,
      focal_gamma=lc.focal_gamma,
      pos_weight=np.asarray(pos_weight, np.float32),
      channel_mask=np.asarray(channel_mask, np.float32),
      cand_table=np.asarray(candidates.token_table(tokenizer)),
      position_limits=None if limits is None else np.asarray(limits),
      num_segments=config.data.max_segments if config.data.mode == 'pack' else 1,
      seed=config.seed,
    )
