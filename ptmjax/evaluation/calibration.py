"""Calibration: how far predicted probabilities are from observed rates, and a fix.

Trained with positive-class weights of up to 20 (`loss.pos_weight='auto'`), a PTM
head's sigmoid over-states the chance of a site many times over: ranking metrics
do not see it, a user reading "0.8" does. Platt scaling (a temperature and a shift
on the logit, per channel) fitted on validation residues maps the scores to rates;
it is monotone, so AUROC, AUPRC and thresholded calls are unchanged. The trainer
stores it in the model folder (`info.calibration`) and `ptmjax predict
--calibrated` applies it.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize


def logit(p: np.ndarray) -> np.ndarray:
  p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
  return np.log(p) - np.log1p(-p)


def fit_platt(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
  """(a, b) minimising the log loss of sigmoid(a * logit(p) + b) on labels `y`."""
  z, y = logit(p), np.asarray(y, np.float64)
  if len(y) == 0 or y.min() == y.max():
    return 1.0, 0.0

  def loss(ab):
    t = ab[0] * z + ab[1]
    # log(1 + e^t) - y t, and its gradient; logaddexp keeps large |t| finite.
    value = np.mean(np.logaddexp(0, t) - y * t)
    g = 1 / (1 + np.exp(-t)) - y
    return value, np.array([np.mean(g * z), np.mean(g)])

  r = scipy.optimize.minimize(loss, np.array([1.0, 0.0]), jac=True, method='L-BFGS-B')
  return float(r.x[0]), float(r.x[1])


def apply_platt(p: np.ndarray, a: float, b: float) -> np.ndarray:
  return 1 / (1 + np.exp(-(a * logit(p) + b)))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 15):
  """(mean predicted, observed rate, count) per equal-width probability bin (empty bins
  left out)."""
  y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
  which = np.minimum((p * bins).astype(int), bins - 1)
  n = np.bincount(which, minlength=bins)
  pred = np.bincount(which, p, minlength=bins)
  obs = np.bincount(which, y, minlength=bins)
  keep = n > 0
  return pred[keep] / n[keep], obs[keep] / n[keep], n[keep]


def ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
  """Expected calibration error: the count-weighted mean |predicted - observed| over bins."""
  pred, obs, n = reliability(y, p, bins)
  return float(np.sum(n * np.abs(pred - obs)) / max(n.sum(), 1))


def fit_channels(flat, scores, candidates, channels) -> dict[str, list[float]]:
  """{channel: [a, b]} fitted on each channel's known candidate residues."""
  from ptmjax.evaluation import report

  out = {}
  for name in channels:
    _, y, s = report.channel_targets(flat, scores, candidates, name)
    if y.sum() and (~y).sum():
      out[name] = list(fit_platt(y, s))
  return out


def apply_channels(scores: np.ndarray, calibration: dict) -> np.ndarray:
  """[N, 16] scores with each calibrated channel's map applied (others unchanged)."""
  from ptmjax.data import ptm_types

  out = np.array(scores, np.float64, copy=True)
  for name, (a, b) in calibration.items():
    c = ptm_types.INDEX[name]
    out[:, c] = apply_platt(out[:, c], a, b)
  return out
