"""Per-channel metrics on candidate residues, and 'any PTM' over all residues.

One function, `channel_report`, scores the model, the baselines and every arm
of an experiment the same way. Inputs are flat over the residues of a set of
proteins (concatenated in order), so bootstraps over proteins can resample
protein slices.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ptmjax.data import ptm_types
from ptmjax.data.candidates import Candidates
from ptmjax.evaluation import metrics

# The pseudo-channel of `channel_report`'s mean over the evaluated channels.
MEAN = 'mean'


@dataclasses.dataclass
class Flat:
  """Residues of several proteins, concatenated: letters [N], labels [N, 16], protein offsets."""

  residues: np.ndarray  # <U1
  labels: np.ndarray  # int8, 1 / 0 / -1
  offsets: np.ndarray  # [P + 1]

  @classmethod
  def from_examples(cls, sequences, labels) -> Flat:
    lengths = [len(s) for s in sequences]
    return cls(
      residues=np.array(list(''.join(sequences)), dtype='<U1'),
      labels=np.concatenate([np.asarray(x, np.int8) for x in labels])
      if labels
      else np.zeros((0, ptm_types.NUM_TYPES), np.int8),
      offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
    )

  @property
  def positions(self) -> np.ndarray:
    """int [N]: each residue's 0-based place in its protein (position-limited channels)."""
    lengths = np.diff(self.offsets)
    return np.arange(len(self.residues)) - np.repeat(self.offsets[:-1], lengths)

  def take(self, proteins: np.ndarray) -> np.ndarray:
    """Residue indices of the given proteins (with repeats, for bootstraps)."""
    starts, ends = self.offsets[proteins], self.offsets[proteins + 1]
    return np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)])


def channel_targets(flat: Flat, scores: np.ndarray, candidates, name: str):
  """(keep mask, y, s) for one channel: known labels on candidate residues.

  `candidates`: a `Candidates` (or its JSON mapping)."""
  c = ptm_types.INDEX[name]
  candidates = Candidates.from_config(candidates)
  keep = (flat.labels[:, c] >= 0) & candidates.residue_mask(flat.residues, name, flat.positions)
  return keep, flat.labels[keep, c] == 1, scores[keep, c]


def any_targets(flat: Flat, scores: np.ndarray, candidates, channels):
  """'Any PTM' per residue: positive if any modification channel is 1, scored by the
  highest channel score, a channel counting only on its candidate residues (a head is
  never trained elsewhere, so its score there means nothing)."""
  mods = [c for c in ptm_types.MODIFICATION_CHANNELS if ptm_types.PTM_NAMES[c] in channels]
  if not mods:
    return None
  ml = flat.labels[:, mods]
  usable = Candidates.from_config(candidates).mask(flat.residues, flat.positions)[:, mods] & (
    ml >= 0
  )
  # Every residue with a known label counts; a site on a non-candidate residue stays a
  # positive scored 0, so the candidate sets cannot flatter this number.
  any_pos = (ml == 1).any(1)
  keep = any_pos | (ml == 0).any(1)
  s = np.where(usable, scores[:, mods], 0.0).max(1)
  return keep, any_pos[keep], s[keep]


def channel_report(
  flat: Flat,
  scores: np.ndarray,
  candidates,
  channels,
  *,
  thresholds: dict | None = None,
  prefix: str = 'val',
) -> tuple[dict, dict]:
  """Flat metrics `{prefix}/{channel}/{auroc,auprc,best_f1,f1,mcc,positives,n}` and the
  best-F1 threshold per channel. With `thresholds` (chosen on validation), F1 and MCC are
  taken there; otherwise at this data's best-F1 threshold."""
  out, chosen = {}, {}
  targets = {name: channel_targets(flat, scores, candidates, name) for name in channels}
  anyt = any_targets(flat, scores, candidates, channels)
  if anyt is not None:
    targets['any'] = anyt
  for name, (_, y, s) in targets.items():
    if y.sum() == 0 or (~y).sum() == 0:
      continue
    r = metrics.binary_report(y, s, (thresholds or {}).get(name))
    chosen[name] = r['best_f1_threshold']
    for k in ('auroc', 'auprc', 'best_f1', 'f1', 'mcc', 'positives', 'n'):
      out[f'{prefix}/{name}/{k}'] = r[k]
  # The mean over the channels evaluated (not 'any'): what a study selects checkpoints,
  # patience and recipes on when it reports several channels (issue 25: selecting on
  # phosphorylation alone never looked at the lysine channels the verdicts are on).
  scored = [name for name in channels if f'{prefix}/{name}/auroc' in out]
  if scored:
    for k in ('auroc', 'auprc'):
      out[f'{prefix}/{MEAN}/{k}'] = float(np.mean([out[f'{prefix}/{c}/{k}'] for c in scored]))
    out[f'{prefix}/{MEAN}/channels'] = len(scored)
  return out, chosen
