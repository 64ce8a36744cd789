"""Loss against a NumPy implementation (with masks); metrics against scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as skm

from ptmjax.data import ptm_types
from ptmjax.data import tokenizer as tok
from ptmjax.data.candidates import Candidates
from ptmjax.evaluation import metrics
from ptmjax.training import losses


def _numpy_loss(logits, labels, weights, pos_weight, smoothing, gamma):
  known = (labels >= 0) & (weights > 0)
  y = (labels == 1).astype(np.float64)
  t = y * (1 - smoothing) + 0.5 * smoothing
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  if gamma:
    bce = bce * (1 - np.where(y > 0, p, 1 - p)) ** gamma
  w = np.where(y > 0, pos_weight, 1.0) * weights * known
  return (bce * w).sum() / known.sum(), known.sum()


@pytest.mark.parametrize('smoothing,gamma', [(0.0, 0.0), (0.1, 0.0), (0.05, 2.0)])
def test_ptm_loss_matches_numpy(smoothing, gamma):
  rng = np.random.default_rng(0)
  shape = (3, 11, ptm_types.NUM_TYPES)
  logits = rng.normal(size=shape).astype(np.float32) * 3
  labels = rng.choice([-1, 0, 0, 0, 1], size=shape).astype(np.int8)
  weights = (rng.random(shape) > 0.3).astype(np.float32)  # padding / candidates
  weights[:, 0] = 0  # <cls>
  pos_weight = rng.uniform(1, 20, ptm_types.NUM_TYPES).astype(np.float32)
  loss, n = losses.ptm_loss(
    logits, labels, weights, pos_weight=pos_weight, label_smoothing=smoothing, focal_gamma=gamma
  )
  ref, ref_n = _numpy_loss(logits, labels, weights, pos_weight, smoothing, gamma)
  assert int(n) == ref_n
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


def test_masked_entries_do_not_move_the_loss():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 5, 16)).astype(np.float32)
  labels = rng.choice([0, 1], size=(2, 5, 16)).astype(np.int8)
  labels[0, 0, 0] = -1  # unknown: masked like a zero weight
  weights = np.ones((2, 5, 16), np.float32)
  weights[1, 3:] = 0
  a, _ = losses.ptm_loss(logits, labels, weights)
  moved = logits.copy()
  moved[1, 3:] += 100  # zero-weight entries
  moved[0, 0, 0] -= 100  # the unknown label
  b, _ = losses.ptm_loss(moved, labels, weights)
  np.testing.assert_allclose(float(b), float(a), rtol=1e-6)
  # Control: moving one scored entry does move it (the test can fail).
  moved[0, 1, 0] += 5
  c, _ = losses.ptm_loss(moved, labels, weights)
  assert abs(float(c) - float(a)) > 1e-3


def test_candidate_table():
  t = tok.esm()
  table = Candidates({'phosphorylation': 'STY', 'acetylation': 'K'}).token_table(t)
  phos, ac = ptm_types.INDEX['phosphorylation'], ptm_types.INDEX['acetylation']
  assert {t.vocab[i] for i in np.flatnonzero(table[:, phos])} == set('STY')
  assert {t.vocab[i] for i in np.flatnonzero(table[:, ac])} == {'K'}
  other = ptm_types.INDEX['methylation']
  assert not table[t.cls_id, other] and not table[t.pad_id, other] and table[t.id('R'), other]


def test_count_and_mlm_loss():
  pred = np.array([[[0.0, 1.0]]], np.float32)
  counts = np.array([[[0, 3]]], np.int32)
  valid = np.array([[[True, False]]])
  assert float(losses.count_loss(pred, counts, valid)) == 0.0
  logits = np.log(np.array([[[0.25, 0.75], [0.5, 0.5]]], np.float32))
  loss = losses.mlm_loss(logits, np.array([[1, 0]]), np.array([[True, False]]))
  np.testing.assert_allclose(float(loss), -np.log(0.75), rtol=1e-6)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_metrics_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  n = 2000
  y = rng.random(n) < 0.05
  s = np.round(rng.normal(size=n) + 1.5 * y, 1)  # ties included
  assert metrics.auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
  assert metrics.auprc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
  t, f1 = metrics.best_f1_threshold(y, s)
  precision, recall, thresholds = skm.precision_recall_curve(y, s)
  f1s = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
  assert f1 == pytest.approx(f1s[:-1].max(), abs=1e-12)
  assert metrics.f1_at(y, s, t) == pytest.approx(skm.f1_score(y, s >= t), abs=1e-12)
  assert metrics.mcc_at(y, s, t) == pytest.approx(skm.matthews_corrcoef(y, s >= t), abs=1e-12)


def test_metrics_degenerate():
  assert np.isnan(metrics.auroc([1, 1], [0.1, 0.2]))
  assert np.isnan(metrics.auprc([0, 0], [0.1, 0.2]))
  report = metrics.binary_report([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], threshold=0.5)
  assert report['auroc'] == 1.0 and report['mcc'] == 1.0 and report['f1'] == 1.0
