"""Bootstrap intervals over proteins for AUROC / AUPRC, paired across arms.

Resampling proteins (not residues) keeps the residues of one protein together,
as they are not independent. A resample is a vector of multiplicities per
protein; every arm is scored on the same resamples, so differences are paired.
Scores are sorted once per arm; each resample is then a weighted cumulative sum,
which equals scoring the repeated residues (tested against `metrics`).
"""

from __future__ import annotations

import numpy as np


class Ranked:
  """One arm's scores on one target set, sorted once for weighted re-scoring."""

  def __init__(self, y: np.ndarray, s: np.ndarray, group: np.ndarray):
    order = np.argsort(-np.asarray(s, np.float64), kind='mergesort')
    s_sorted = np.asarray(s, np.float64)[order]
    self.y = np.asarray(y, bool)[order]
    self.group = np.asarray(group)[order]
    # The last index of each run of equal scores: ties move together.
    self.last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]

  def scores(self, protein_weights: np.ndarray) -> tuple[float, float]:
    """(AUROC, AUPRC as average precision) with residues weighted by their protein's count."""
    w = protein_weights[self.group].astype(np.float64)
    tp = np.cumsum(w * self.y)[self.last]
    fp = np.cumsum(w * ~self.y)[self.last]
    pos, neg = tp[-1] if len(tp) else 0.0, fp[-1] if len(fp) else 0.0
    if pos == 0 or neg == 0:
      return float('nan'), float('nan')
    tpr, fpr = np.r_[0, tp / pos], np.r_[0, fp / neg]
    auroc = float(np.trapezoid(tpr, fpr))
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    auprc = float(np.sum(np.diff(np.r_[0, tp / pos]) * precision))
    return auroc, auprc


def resamples(num_proteins: int, n: int, seed: int = 0) -> np.ndarray:
  """[n, num_proteins] multiplicities: each row draws num_proteins proteins with replacement."""
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, num_proteins, size=(n, num_proteins))
  return np.stack([np.bincount(d, minlength=num_proteins) for d in draws])


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if not len(v):
    return float('nan'), float('nan')
  a = (1 - level) / 2
  return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def seed_resamples(num_seeds: int, n: int, seed: int = 1) -> np.ndarray:
  """[n, num_seeds] seed indices drawn with replacement, one row per resample."""
  return np.random.default_rng(seed).integers(0, num_seeds, size=(n, num_seeds))


def hierarchical(per_seed: np.ndarray, seed_draws: np.ndarray) -> np.ndarray:
  """Two-level bootstrap values: seeds and proteins resampled together.

  Args:
    per_seed: [S, B, ...] a metric of each trained seed on each protein resample.
    seed_draws: [B, S'] seed indices per resample (`seed_resamples`); an arm with one
      "seed" (a deterministic baseline) uses index 0 throughout.

  Returns:
    [B, ...]: per resample, the mean over its drawn seeds on its drawn proteins. Every
    arm sharing `seed_draws` and the protein resamples is paired with the others, so
    differences of these arrays are paired differences. With one trained seed this is
    the protein bootstrap: the seed-to-seed spread is then not measured, and reports
    say so.
  """
  per_seed = np.asarray(per_seed)
  idx = np.minimum(seed_draws, len(per_seed) - 1)  # [B, S']
  b = np.arange(per_seed.shape[1])[:, None]
  return per_seed[idx, b].mean(1)
