"""Which residues each PTM channel scores: one value for the loss, metrics, baselines and predict.

A channel's *candidates* are the amino acids that can carry it (S/T/Y for
phosphorylation, K for acetylation, ...). The loss trains a channel only on
its candidates, metrics and baselines score only them, and `ptmjax predict`
writes `NA` elsewhere. A channel with no entry scores every residue.

They come from a config (`'phosphorylation=STY,acetylation=K'`), or are derived
from training labels (`'auto'`), and are saved with every run
(`run_info.json`) and model folder (`ptmjax_model.json: info.candidates`) as
the plain `{channel: residues}` JSON object that earlier versions wrote too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from ptmjax.data import ptm_types
from ptmjax.data.sources import text


@dataclasses.dataclass(frozen=True)
class Candidates:
  """{channel: candidate residue letters}; channels not listed score every residue."""

  residues: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    unknown = sorted(set(self.residues) - set(ptm_types.PTM_NAMES))
    if unknown:
      raise ValueError(f'candidates for unknown channels {unknown}; known: {ptm_types.PTM_NAMES}')
    clean = {k: ''.join(sorted(set(v.upper()))) for k, v in self.residues.items() if v}
    object.__setattr__(self, 'residues', clean)

  # --- construction -------------------------------------------------------------------
  @classmethod
  def from_config(cls, value, training_examples: Iterable | None = None) -> Candidates:
    """From a config value: 'auto' (derived from `training_examples`), '' / None (every
    residue everywhere), 'phosphorylation=STY,acetylation=K', or a mapping."""
    if isinstance(value, Candidates):
      return value
    if value == 'auto':
      if training_examples is None:
        raise ValueError("candidates='auto' needs the training examples to derive them from")
      return cls.derive(training_examples)
    if not value:
      return cls()
    if isinstance(value, str):
      pairs = [kv.split('=') for kv in value.split(',') if kv.strip()]
      bad = [kv for kv in pairs if len(kv) != 2]
      if bad:
        raise ValueError(f'candidates {value!r}: expected channel=RESIDUES[,channel=RESIDUES...]')
      return cls({k.strip(): v.strip() for k, v in pairs})
    return cls(dict(value))

  @classmethod
  def derive(cls, examples: Iterable, min_share: float = 0.005, min_sites: int = 3) -> Candidates:
    """From training labels: a residue is a candidate for a channel if it carries at least
    `min_share` of the channel's positives and at least `min_sites` of them. Channels with
    no positives are left out (they then score every residue)."""
    counts = np.zeros((ptm_types.NUM_TYPES, 26), np.int64)
    for ex in examples:
      seq = np.frombuffer(text(ex['sequence']).encode(), np.uint8) - ord('A')
      labels = np.asarray(ex['labels'])
      for c in range(ptm_types.NUM_TYPES):
        np.add.at(counts[c], seq[labels[:, c] == ptm_types.POSITIVE], 1)
    out = {}
    for c, name in enumerate(ptm_types.PTM_NAMES):
      total = counts[c].sum()
      if total == 0:
        continue
      keep = (counts[c] >= max(min_sites, min_share * total)).nonzero()[0]
      out[name] = ''.join(chr(ord('A') + k) for k in keep)
    return cls(out)

  @classmethod
  def from_json(cls, d: Mapping | None) -> Candidates:
    return cls(dict(d or {}))

  def to_json(self) -> dict[str, str]:
    return dict(self.residues)

  # --- use ------------------------------------------------------------------------------
  def get(self, channel: str) -> str | None:
    """The channel's candidate letters, or None when it scores every residue."""
    return self.residues.get(channel)

  def residue_mask(self, residues: np.ndarray, channel: str) -> np.ndarray:
    """bool [N]: which of `residues` (one-letter codes, '<U1' [N]) the channel scores."""
    cand = self.residues.get(channel)
    residues = np.asarray(residues)
    return np.isin(residues, list(cand)) if cand else np.ones(residues.shape, bool)

  def mask(self, residues: np.ndarray) -> np.ndarray:
    """bool [N, NUM_TYPES]: `residue_mask` of every channel."""
    return np.stack([self.residue_mask(residues, name) for name in ptm_types.PTM_NAMES], -1)

  def token_table(self, tokenizer) -> np.ndarray:
    """bool [vocab, NUM_TYPES]: may this token carry this channel? (for the loss)

    Special tokens are never candidates; channels without an entry allow every
    residue token.
    """
    table = np.zeros((tokenizer.vocab_size, ptm_types.NUM_TYPES), bool)
    residue_tokens = [i for i, t in enumerate(tokenizer.vocab) if len(t) == 1 and t.isalpha()]
    table[residue_tokens] = True
    for name, letters in self.residues.items():
      c = ptm_types.INDEX[name]
      table[:, c] = False
      for aa in letters:
        table[tokenizer.id(aa), c] = True
    return table

  def label_counts(self, examples: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives per channel on candidate residues (for pos_weight='auto')."""
    pos = np.zeros(ptm_types.NUM_TYPES, np.int64)
    neg = np.zeros(ptm_types.NUM_TYPES, np.int64)
    for ex in examples:
      seq = np.frombuffer(text(ex['sequence']).encode(), 'S1').astype(str)
      keep = self.mask(seq)
      labels = np.asarray(ex['labels'])
      pos += ((labels == ptm_types.POSITIVE) & keep).sum(0)
      neg += ((labels == 0) & keep).sum(0)
    return pos, neg
