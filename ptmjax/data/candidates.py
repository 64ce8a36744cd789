"""Which residues each PTM channel scores: one value for the loss, metrics, baselines and predict.

A channel's *candidates* are the amino acids that can carry it (S/T/Y for
phosphorylation, K for acetylation, ...). The loss trains a channel only on
its candidates, metrics and baselines score only them, and `ptmjax predict`
writes `NA` elsewhere. A channel with no entry scores every residue.

A channel can also be limited to the first residues of the protein:
N-terminal acetylation exists only on the protein's alpha-amino group, i.e. at
position 1, or 2 once the initiator Met is removed. Scored on its residue types
everywhere, it would be trained and judged on ~40 % of all residues, nearly all
of which can never carry it. `'nt_acetylation=AMST@2'` scores A/M/S/T at
positions 1-2 only; `'@2'` alone every residue there. Positions are 1-based
protein positions, so every user of a position-limited channel passes each
residue's place in its protein (the input pipeline's `residue_index`,
`report.Flat.positions`).

They come from a config (`'phosphorylation=STY,acetylation=K'`), or are derived
from training labels (`'auto'`; channels with a `ptm_types.PtmType.max_position`
get that limit), and are saved with every run (`run_info.json`) and model folder
(`ptmjax_model.json: info.candidates`) as the plain `{channel: residues}` JSON
object that earlier versions wrote too, a limit written as `'AMST@2'`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from ptmjax.data import ptm_types
from ptmjax.data.sources import text

# A channel limited to positions 1..N is written 'LETTERS@N' (in configs and JSON).
_AT = '@'
# No limit, as a number the loss can compare token positions with.
NO_LIMIT = np.iinfo(np.int32).max


def _split(channel: str, value: str) -> tuple[str, int]:
  letters, at, limit = str(value).partition(_AT)
  if not at:
    return letters.strip(), 0
  if not limit.strip().isdigit() or int(limit) < 1:
    raise ValueError(
      f'candidates for {channel}: {value!r}: expected RESIDUES@N with N >= 1 '
      '(scored at protein positions 1..N)'
    )
  return letters.strip(), int(limit)


@dataclasses.dataclass(frozen=True)
class Candidates:
  """{channel: candidate residue letters}; channels not listed score every residue.

  `positions`: {channel: N} for channels scored at protein positions 1..N only."""

  residues: Mapping[str, str] = dataclasses.field(default_factory=dict)
  positions: Mapping[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    unknown = sorted((set(self.residues) | set(self.positions)) - set(ptm_types.PTM_NAMES))
    if unknown:
      raise ValueError(f'candidates for unknown channels {unknown}; known: {ptm_types.PTM_NAMES}')
    residues, positions = {}, {k: int(v) for k, v in self.positions.items() if v}
    for k, v in self.residues.items():
      letters, limit = _split(k, v)
      if limit:
        positions[k] = limit
      if letters:
        residues[k] = ''.join(sorted(set(letters.upper())))
    object.__setattr__(self, 'residues', residues)
    object.__setattr__(self, 'positions', positions)

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
    no positives are left out (they then score every residue). A channel whose type has a
    `max_position` is limited to it, its letters counted from the sites there only (sites
    beyond stay unscored; `outside` counts them)."""
    limits = {t.name: t.max_position for t in ptm_types.PTM_TYPES if t.max_position}
    last = np.array([limits.get(n, NO_LIMIT) for n in ptm_types.PTM_NAMES])
    counts = np.zeros((ptm_types.NUM_TYPES, 26), np.int64)
    for ex in examples:
      seq = np.frombuffer(text(ex['sequence']).encode(), np.uint8) - ord('A')
      labels = np.asarray(ex['labels'])
      near = np.arange(len(seq))[:, None] < last[None, :]
      for c in range(ptm_types.NUM_TYPES):
        np.add.at(counts[c], seq[(labels[:, c] == ptm_types.POSITIVE) & near[:, c]], 1)
    out, positions = {}, {}
    for c, name in enumerate(ptm_types.PTM_NAMES):
      total = counts[c].sum()
      if total == 0:
        continue
      keep = (counts[c] >= max(min_sites, min_share * total)).nonzero()[0]
      out[name] = ''.join(chr(ord('A') + k) for k in keep)
      if name in limits:
        positions[name] = limits[name]
    return cls(out, positions)

  @classmethod
  def from_json(cls, d: Mapping | None) -> Candidates:
    return cls(dict(d or {}))

  def to_json(self) -> dict[str, str]:
    """{channel: 'LETTERS'} or 'LETTERS@N' for a channel limited to positions 1..N."""
    out = dict(self.residues)
    for k, n in self.positions.items():
      out[k] = f'{out.get(k, "")}{_AT}{n}'
    return out

  # --- use ------------------------------------------------------------------------------
  def get(self, channel: str) -> str | None:
    """The channel's candidate letters, or None when it scores every residue."""
    return self.residues.get(channel)

  def limit(self, channel: str) -> int:
    """The last protein position (1-based) the channel scores; 0 when it has no limit."""
    return self.positions.get(channel, 0)

  def residue_mask(self, residues: np.ndarray, channel: str, positions=None) -> np.ndarray:
    """bool [N]: which of `residues` (one-letter codes, '<U1' [N]) the channel scores.

    `positions`: int [N], each residue's 0-based place in its protein; needed when the
    channel is limited to the first positions (a mask without them would be wrong)."""
    cand = self.residues.get(channel)
    residues = np.asarray(residues)
    keep = np.isin(residues, list(cand)) if cand else np.ones(residues.shape, bool)
    if channel in self.positions:
      if positions is None:
        raise ValueError(
          f'{channel} is scored at protein positions 1-{self.positions[channel]} only: '
          "pass the residues' positions"
        )
      keep &= np.asarray(positions) < self.positions[channel]
    return keep

  def mask(self, residues: np.ndarray, positions=None) -> np.ndarray:
    """bool [N, NUM_TYPES]: `residue_mask` of every channel."""
    return np.stack(
      [self.residue_mask(residues, name, positions) for name in ptm_types.PTM_NAMES], -1
    )

  def position_limits(self) -> np.ndarray:
    """int32 [NUM_TYPES]: a token scores channel c only if its 0-based protein position is
    below entry c (for the loss, with the pipeline's `residue_index`)."""
    return np.array([self.positions.get(n, NO_LIMIT) for n in ptm_types.PTM_NAMES], np.int32)

  def token_table(self, tokenizer) -> np.ndarray:
    """bool [vocab, NUM_TYPES]: may this token carry this channel? (for the loss)

    Special tokens are never candidates; channels without an entry allow every
    residue token. Position limits are not in it: see `position_limits`.
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
    pos, neg, _ = self.site_counts(examples)
    return pos, neg

  def outside(self, examples: Iterable) -> dict[str, int]:
    """{channel: positives on residues the channel does not score}, channels with any: sites
    no loss, metric or prediction sees (a His phosphosite, an internal 'N-terminal' one)."""
    return outside_dict(self.site_counts(examples)[2])

  def site_counts(self, examples: Iterable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int [NUM_TYPES] x 3: positives and negatives on candidates, positives outside them."""
    pos, neg, out = (np.zeros(ptm_types.NUM_TYPES, np.int64) for _ in range(3))
    for ex in examples:
      seq = np.frombuffer(text(ex['sequence']).encode(), 'S1').astype(str)
      keep = self.mask(seq, np.arange(len(seq)))
      labels = np.asarray(ex['labels'])
      pos += ((labels == ptm_types.POSITIVE) & keep).sum(0)
      neg += ((labels == 0) & keep).sum(0)
      out += ((labels == ptm_types.POSITIVE) & ~keep).sum(0)
    return pos, neg, out


def outside_dict(outside: np.ndarray) -> dict[str, int]:
  """{channel: count} of the channels with positives outside their candidates."""
  return {n: int(outside[c]) for c, n in enumerate(ptm_types.PTM_NAMES) if outside[c]}
