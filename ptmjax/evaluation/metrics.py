"""Ranking and threshold metrics, in NumPy, checked against scikit-learn in the tests.

AUPRC is average precision (the step-wise area scikit-learn's
`average_precision_score` computes), not the trapezoidal area, which is
optimistic for imbalanced data.
"""

from __future__ import annotations

import numpy as np


def _sorted_counts(y, s):
  """Cumulative TP and FP at each distinct score threshold, descending."""
  order = np.argsort(-s, kind='mergesort')
  y, s = y[order], s[order]
  last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
  tp = np.cumsum(y)[last]
  fp = (last + 1) - tp
  return tp, fp, s[last]


def auroc(y, s) -> float:
  y, s = np.asarray(y, bool), np.asarray(s, np.float64)
  pos, neg = y.sum(), (~y).sum()
  if pos == 0 or neg == 0:
    return float('nan')
  tp, fp, _ = _sorted_counts(y, s)
  tpr = np.r_[0, tp / pos]
  fpr = np.r_[0, fp / neg]
  return float(np.trapezoid(tpr, fpr))


def auprc(y, s) -> float:
  """Average precision: sum over thresholds of (recall step) x precision."""
  y, s = np.asarray(y, bool), np.asarray(s, np.float64)
  pos = y.sum()
  if pos == 0:
    return float('nan')
  tp, fp, _ = _sorted_counts(y, s)
  precision = tp / (tp + fp)
  recall = tp / pos
  return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def curves(y, s) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(fpr, tpr, recall, precision) at every distinct threshold, for plots."""
  y, s = np.asarray(y, bool), np.asarray(s, np.float64)
  tp, fp, _ = _sorted_counts(y, s)
  pos, neg = max(y.sum(), 1), max((~y).sum(), 1)
  return np.r_[0, fp / neg], np.r_[0, tp / pos], tp / pos, tp / np.maximum(tp + fp, 1)


def best_f1_threshold(y, s) -> tuple[float, float]:
  """(threshold, F1) maximising F1 when predicting positive for s >= threshold."""
  y, s = np.asarray(y, bool), np.asarray(s, np.float64)
  pos = y.sum()
  if pos == 0 or len(y) == 0:
    return float('nan'), float('nan')
  tp, fp, thresholds = _sorted_counts(y, s)
  f1 = 2 * tp / (tp + fp + pos)
  i = int(np.argmax(f1))
  return float(thresholds[i]), float(f1[i])


def confusion(y, s, threshold: float):
  y, pred = np.asarray(y, bool), np.asarray(s) >= threshold
  return (
    int((pred & y).sum()),
    int((pred & ~y).sum()),
    int((~pred & y).sum()),
    int((~pred & ~y).sum()),
  )


def f1_at(y, s, threshold: float) -> float:
  tp, fp, fn, _ = confusion(y, s, threshold)
  return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float('nan')


def mcc_at(y, s, threshold: float) -> float:
  tp, fp, fn, tn = confusion(y, s, threshold)
  den = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return float((tp * tn - fp * fn) / den) if den else 0.0


def binary_report(y, s, threshold: float | None = None) -> dict:
  """AUROC, AUPRC, the best-F1 threshold on these data, and F1/MCC at `threshold`.

  Pass the validation-chosen threshold when reporting on test data.
  """
  y, s = np.asarray(y, bool), np.asarray(s, np.float64)
  best_t, best_f1 = best_f1_threshold(y, s)
  t = best_t if threshold is None else threshold
  return {
    'n': int(len(y)),
    'positives': int(y.sum()),
    'auroc': auroc(y, s),
    'auprc': auprc(y, s),
    'best_f1': best_f1,
    'best_f1_threshold': best_t,
    'threshold': t,
    'f1': f1_at(y, s, t) if np.isfinite(t) else float('nan'),
    'mcc': mcc_at(y, s, t) if np.isfinite(t) else float('nan'),
  }
