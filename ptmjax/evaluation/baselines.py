"""Baselines every model result is set against, scored by `report.channel_report`.

* `ResidueIdentity`: P(modified | amino acid) per channel, from the training labels.
  On S/T/Y phosphorylation it ranks by residue type alone; a model that does not beat
  it has learned nothing about context.
* `WindowLogReg`: scikit-learn logistic regression per channel on one-hot windows of
  +/- `half` residues around each candidate residue (the classic sequence-motif model).
  `features='composition'` sees only the protein (its 20 amino-acid shares and log
  length: the same score for every candidate of a protein), `'window+composition'`
  both. On channels where whole proteins are unannotated (YAAM marks every residue of
  a listed protein 0 when no site of the type is known), the composition model shows
  how much of a score only tells which proteins were studied.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from sklearn.linear_model import LogisticRegression

from ptmjax.data import ptm_types
from ptmjax.data.candidates import Candidates
from ptmjax.evaluation.report import Flat

ALPHABET = 'ACDEFGHIKLMNPQRSTVWY'
_CODE = np.full(128, len(ALPHABET), np.int64)  # anything else (X, U, padding) -> 20
_CODE[np.frombuffer(ALPHABET.encode(), np.uint8)] = np.arange(len(ALPHABET))


class ResidueIdentity:
  """Score = (sites + 1) / (known + 2) for the residue's amino acid, per channel."""

  def fit(self, flat: Flat) -> ResidueIdentity:
    codes = _CODE[np.frombuffer(''.join(flat.residues).encode(), np.uint8)]
    self.rates = np.zeros((len(ALPHABET) + 1, ptm_types.NUM_TYPES))
    for c in range(ptm_types.NUM_TYPES):
      known = flat.labels[:, c] >= 0
      pos = np.bincount(codes[known], flat.labels[known, c] == 1, minlength=len(ALPHABET) + 1)
      n = np.bincount(codes[known], minlength=len(ALPHABET) + 1)
      self.rates[:, c] = (pos + 1) / (n + 2)
    return self

  def predict(self, flat: Flat) -> np.ndarray:
    codes = _CODE[np.frombuffer(''.join(flat.residues).encode(), np.uint8)]
    return self.rates[codes]


def window_features(flat: Flat, rows: np.ndarray, half: int) -> scipy.sparse.csr_matrix:
  """One-hot windows (2 * half + 1 positions x 21 letters) around residues `rows`;
  windows stop at protein ends (the padding letter is the 21st)."""
  codes = _CODE[np.frombuffer(''.join(flat.residues).encode(), np.uint8)]
  protein = np.searchsorted(flat.offsets, rows, side='right') - 1
  start, end = flat.offsets[protein], flat.offsets[protein + 1]
  offsets = np.arange(-half, half + 1)
  pos = rows[:, None] + offsets[None, :]
  inside = (pos >= start[:, None]) & (pos < end[:, None])
  letter = np.where(inside, codes[np.clip(pos, 0, len(codes) - 1)], len(ALPHABET))
  cols = (np.arange(len(offsets))[None, :] * (len(ALPHABET) + 1) + letter).ravel()
  data = np.ones(len(cols), np.float32)
  indptr = np.arange(0, len(cols) + 1, len(offsets))
  return scipy.sparse.csr_matrix(
    (data, cols, indptr), shape=(len(rows), len(offsets) * (len(ALPHABET) + 1))
  )


def composition_features(flat: Flat, rows: np.ndarray) -> np.ndarray:
  """[len(rows), 21]: the amino-acid shares of each row's protein and its log length
  (centred on a 400-residue protein), the same for every residue of a protein."""
  codes = _CODE[np.frombuffer(''.join(flat.residues).encode(), np.uint8)]
  protein = np.searchsorted(flat.offsets, np.arange(len(codes)), side='right') - 1
  num = len(flat.offsets) - 1
  counts = np.zeros((num, len(ALPHABET) + 1))
  np.add.at(counts, (protein, codes), 1)
  lengths = np.diff(flat.offsets).astype(np.float64)
  shares = counts[:, : len(ALPHABET)] / np.maximum(lengths, 1)[:, None]
  per_protein = np.c_[shares * 10, np.log(np.maximum(lengths, 1) / 400)]
  return per_protein[protein[rows]]


FEATURES = ('window', 'composition', 'window+composition')


class WindowLogReg:
  """Per-channel L2 logistic regression on one-hot windows of candidate residues
  (`features='window'`), on their protein's composition and length, or on both."""

  def __init__(
    self,
    half: int = 15,
    C: float = 0.1,
    max_rows: int = 400_000,
    seed: int = 0,
    features: str = 'window',
  ):
    if features not in FEATURES:
      raise ValueError(f'features must be one of {FEATURES}, not {features!r}')
    self.half, self.C, self.max_rows, self.seed = half, C, max_rows, seed
    self.features = features
    self.models: dict[str, LogisticRegression] = {}

  def _x(self, flat: Flat, rows: np.ndarray):
    if self.features == 'composition':
      return composition_features(flat, rows)
    x = window_features(flat, rows, self.half)
    if self.features == 'window+composition':
      x = scipy.sparse.hstack([x, composition_features(flat, rows)]).tocsr()
    return x

  def fit(self, flat: Flat, candidates, channels) -> WindowLogReg:
    rng = np.random.default_rng(self.seed)
    candidates = Candidates.from_config(candidates)
    for name in channels:
      c = ptm_types.INDEX[name]
      rows = np.flatnonzero(
        (flat.labels[:, c] >= 0) & candidates.residue_mask(flat.residues, name, flat.positions)
      )
      y = flat.labels[rows, c] == 1
      if y.sum() < 2 or (~y).sum() < 2:
        continue
      if len(rows) > self.max_rows:  # a random subset keeps CPU time bounded
        pick = np.sort(rng.choice(len(rows), self.max_rows, replace=False))
        rows, y = rows[pick], y[pick]
      model = LogisticRegression(C=self.C, class_weight='balanced', max_iter=1000)
      self.models[name] = model.fit(self._x(flat, rows), y)
    return self

  def predict(self, flat: Flat, candidates) -> np.ndarray:
    """[N, 16] probabilities; 0 for non-candidate residues and channels without a model."""
    out = np.zeros((len(flat.residues), ptm_types.NUM_TYPES))
    candidates = Candidates.from_config(candidates)
    for name, model in self.models.items():
      rows = np.flatnonzero(candidates.residue_mask(flat.residues, name, flat.positions))
      if len(rows):
        out[rows, ptm_types.INDEX[name]] = model.predict_proba(self._x(flat, rows))[:, 1]
    return out
