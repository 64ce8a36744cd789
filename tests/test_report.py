"""Channel reports against scikit-learn by hand, and the baselines."""

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef, roc_auc_score

from ptmjax.data import ptm_types, synthetic
from ptmjax.evaluation import baselines, report

PHOS, AC = ptm_types.INDEX['phosphorylation'], ptm_types.INDEX['acetylation']
CANDIDATES = {'phosphorylation': 'STY', 'acetylation': 'K'}
CHANNELS = ['phosphorylation', 'acetylation']


def _flat(n=40, seed=0):
  ex = synthetic.generate(n, seed)
  return report.Flat.from_examples([e['sequence'].decode() for e in ex], [e['labels'] for e in ex])


def test_channel_report_matches_sklearn_by_hand():
  flat = _flat()
  rng = np.random.default_rng(0)
  scores = rng.random((len(flat.residues), ptm_types.NUM_TYPES))
  scores[:, PHOS] += 0.5 * (flat.labels[:, PHOS] == 1)  # some signal
  out, thr = report.channel_report(
    flat, scores, CANDIDATES, CHANNELS, thresholds={'phosphorylation': 0.7}, prefix='test'
  )
  sty = np.isin(flat.residues, list('STY')) & (flat.labels[:, PHOS] >= 0)
  y, s = flat.labels[sty, PHOS] == 1, scores[sty, PHOS]
  assert out['test/phosphorylation/n'] == sty.sum()
  np.testing.assert_allclose(out['test/phosphorylation/auroc'], roc_auc_score(y, s), atol=1e-12)
  np.testing.assert_allclose(
    out['test/phosphorylation/auprc'], average_precision_score(y, s), atol=1e-12
  )
  np.testing.assert_allclose(out['test/phosphorylation/f1'], f1_score(y, s >= 0.7), atol=1e-12)
  np.testing.assert_allclose(
    out['test/phosphorylation/mcc'], matthews_corrcoef(y, s >= 0.7), atol=1e-12
  )
  # Any PTM: every residue with a known label; a channel scores only its candidates.
  mods = [PHOS, AC]
  known = (flat.labels[:, mods] >= 0).any(1)
  y_any = (flat.labels[:, mods] == 1).any(1)[known]
  s_phos = np.where(np.isin(flat.residues, list('STY')), scores[:, PHOS], 0)
  s_ac = np.where(flat.residues == 'K', scores[:, AC], 0)
  s_any = np.maximum(s_phos, s_ac)[known]
  np.testing.assert_allclose(out['test/any/auroc'], roc_auc_score(y_any, s_any), atol=1e-12)
  assert set(thr) == {'phosphorylation', 'acetylation', 'any'}


def test_flat_take_returns_protein_slices():
  flat = _flat(5)
  idx = flat.take(np.array([3, 3, 0]))
  n3 = flat.offsets[4] - flat.offsets[3]
  assert len(idx) == 2 * n3 + flat.offsets[1]
  np.testing.assert_array_equal(idx[:n3], np.arange(flat.offsets[3], flat.offsets[4]))


def test_residue_identity_rates():
  flat = _flat()
  model = baselines.ResidueIdentity().fit(flat)
  s = flat.residues == 'S'
  expected = ((flat.labels[s, PHOS] == 1).sum() + 1) / ((flat.labels[s, PHOS] >= 0).sum() + 2)
  scores = model.predict(flat)
  np.testing.assert_allclose(scores[s, PHOS], expected)
  assert scores[flat.residues == 'K', AC].min() > scores[flat.residues == 'A', AC].max()


def test_window_features_stop_at_protein_ends():
  flat = report.Flat.from_examples(['MSK', 'AC'], [np.zeros((3, 16)), np.zeros((2, 16))])
  x = baselines.window_features(flat, np.array([2, 3]), half=2).toarray()
  width = len(baselines.ALPHABET) + 1
  code = {a: i for i, a in enumerate(baselines.ALPHABET)}
  want_k = [20, code['M'], code['S'], code['K'], 20, 20]  # 'K' at the end of protein 1
  want_a = [20, 20, code['A'], code['C'], 20]  # 'A' starts protein 2: no 'K' before it
  for row, want in ((x[0], want_k[1:]), (x[1], want_a)):
    assert row.sum() == 5
    assert [int(np.flatnonzero(row[i * width : (i + 1) * width])[0]) for i in range(5)] == want


def test_window_logreg_learns_the_planted_motifs():
  """S/T-P and R-x-x-S/T are in a +/-15 window: the baseline must find them."""
  train, test = _flat(300, seed=1), _flat(60, seed=2)
  model = baselines.WindowLogReg().fit(train, CANDIDATES, CHANNELS)
  out, _ = report.channel_report(test, model.predict(test, CANDIDATES), CANDIDATES, CHANNELS)
  ident, _ = report.channel_report(
    test, baselines.ResidueIdentity().fit(train).predict(test), CANDIDATES, CHANNELS
  )
  assert out['val/phosphorylation/auroc'] > 0.8
  assert out['val/acetylation/auroc'] > 0.85
  assert ident['val/phosphorylation/auroc'] < 0.7


def test_weighted_bootstrap_equals_repeating_proteins():
  """A resample scored by weights == the repeated residues scored by metrics (== sklearn)."""
  from ptmjax.evaluation import bootstrap, metrics

  flat = _flat(30, seed=3)
  rng = np.random.default_rng(0)
  s = np.round(rng.random(len(flat.residues)), 2)  # ties
  s += 0.3 * (flat.labels[:, PHOS] == 1)
  keep = np.isin(flat.residues, list('STY'))
  rows = np.flatnonzero(keep)
  group = np.searchsorted(flat.offsets, rows, side='right') - 1
  ranked = bootstrap.Ranked(flat.labels[rows, PHOS] == 1, s[rows], group)
  for counts in bootstrap.resamples(30, 3, seed=1):
    idx = flat.take(np.repeat(np.arange(30), counts))
    idx = idx[keep[idx]]
    y, ss = flat.labels[idx, PHOS] == 1, s[idx]
    got = ranked.scores(counts)
    np.testing.assert_allclose(got, (metrics.auroc(y, ss), metrics.auprc(y, ss)), atol=1e-12)
    np.testing.assert_allclose(got[0], roc_auc_score(y, ss), atol=1e-12)
