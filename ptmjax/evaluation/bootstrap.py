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


def cluster_resamples(clusters, n: int, seed: int = 0) -> np.ndarray:
  """[n, num_proteins] multiplicities from resampling whole homology clusters.

  Each row draws as many clusters as there are, with replacement; every protein of a
  drawn cluster counts once per draw. Homologous proteins (HTB1/HTB2, TPK1/2/3) share
  sites and errors, so resampling them one by one treats one observation as several
  and makes intervals too narrow.

  Args:
    clusters: [num_proteins] cluster id of each protein (any hashable values).
  """
  _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
  k = int(inverse.max()) + 1 if len(inverse) else 0
  draws = np.random.default_rng(seed).integers(0, k, size=(n, k))
  per_cluster = np.stack([np.bincount(d, minlength=k) for d in draws]) if n else np.zeros((0, k))
  return per_cluster[:, inverse]


def seed_and_test_interval(
  per_seed: np.ndarray, test_draws: np.ndarray, level: float = 0.95
) -> dict:
  """A paired difference's interval and p-value over trained seeds and test clusters.

  The percentile bootstrap over a handful of seeds undercovers (about 85 % for a
  nominal 95 % at 5 seeds): resampling 5 values cannot show how far their mean may
  be from the truth. Here the two variances add, the seed one estimated with its
  S - 1 degrees of freedom, and the quantile is Student's t with the
  Welch-Satterthwaite degrees of freedom (the test-set variance, from hundreds of
  clusters, counts as known).

  Args:
    per_seed: [S] the difference of each seed's pair of models on the whole test set.
    test_draws: [B] the seed-averaged difference on each cluster resample (seeds fixed).

  Returns:
    {'mean', 'ci': (lo, hi), 'p', 'df', 'se_seed', 'se_test'}.
  """
  from scipy import stats

  d = np.asarray(per_seed, np.float64)
  d = d[np.isfinite(d)]
  t = np.asarray(test_draws, np.float64)
  t = t[np.isfinite(t)]
  nan = float('nan')
  if not len(d):
    return {'mean': nan, 'ci': (nan, nan), 'p': nan, 'df': nan, 'se_seed': nan, 'se_test': nan}
  v_seed = d.var(ddof=1) / len(d) if len(d) > 1 else 0.0
  v_test = t.var(ddof=1) if len(t) > 1 else 0.0
  se = float(np.sqrt(v_seed + v_test))
  df = (v_seed + v_test) ** 2 / (v_seed**2 / (len(d) - 1)) if v_seed > 0 else np.inf
  mean = float(d.mean())
  if se == 0:
    p = 1.0 if mean == 0 else 0.0
    return {'mean': mean, 'ci': (mean, mean), 'p': p, 'df': float(df), 'se_seed': 0.0,
            'se_test': 0.0}  # fmt: skip
  q = float(stats.t.ppf(1 - (1 - level) / 2, df))
  p = float(2 * stats.t.sf(abs(mean) / se, df))
  return {
    'mean': mean,
    'ci': (mean - q * se, mean + q * se),
    'p': p,
    'df': float(df),
    'se_seed': float(np.sqrt(v_seed)),
    'se_test': float(np.sqrt(v_test)),
  }


def holm(pvalues: dict) -> dict:
  """Holm-Bonferroni adjusted p-values, {key: p} -> {key: adjusted p} (NaNs stay NaN)."""
  keys = [k for k, p in pvalues.items() if p == p]
  order = sorted(keys, key=lambda k: pvalues[k])
  m, running, out = len(order), 0.0, {k: float('nan') for k in pvalues}
  for i, k in enumerate(order):
    running = max(running, min(1.0, (m - i) * pvalues[k]))
    out[k] = running
  return out
