"""The stage comparison's statistics: hierarchical bootstrap, calibration, table rows, baselines."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ptmjax.data import ptm_types
from ptmjax.evaluation import baselines, bootstrap, calibration, report
from ptmjax.studies import compare_stats


def _toy(num_proteins=40, length=12, seeds=3, rng=None):
  """Per-seed scores on `num_proteins` proteins of `length` residues each."""
  rng = rng or np.random.default_rng(0)
  y = rng.random((num_proteins, length)) < 0.2
  group = np.repeat(np.arange(num_proteins), length)
  scores = [(y * (0.5 + k) + rng.normal(size=y.shape)).ravel() for k in range(seeds)]
  return y.ravel(), group, scores


def test_hierarchical_bootstrap_equals_brute_force_resampling():
  y, group, scores = _toy()
  n = 30
  counts = bootstrap.resamples(group.max() + 1, n, seed=3)
  draws = bootstrap.seed_resamples(len(scores), n, seed=4)
  per_seed = np.array([[bootstrap.Ranked(y, s, group).scores(c) for c in counts] for s in scores])
  fast = bootstrap.hierarchical(per_seed, draws)
  for b in range(n):
    # Brute force: the resampled proteins' residues, repeated, for each drawn seed.
    rows = np.concatenate([np.flatnonzero(group == p) for p in np.repeat(np.arange(40), counts[b])])
    values = [
      (roc_auc_score(y[rows], scores[k][rows]), average_precision_score(y[rows], scores[k][rows]))
      for k in draws[b]
    ]
    np.testing.assert_allclose(fast[b], np.mean(values, 0), rtol=1e-10, atol=1e-12)


def test_one_seed_or_a_baseline_is_the_protein_bootstrap():
  y, group, scores = _toy(seeds=1)
  counts = bootstrap.resamples(group.max() + 1, 20)
  per_seed = np.array([[bootstrap.Ranked(y, scores[0], group).scores(c) for c in counts]])
  draws = bootstrap.seed_resamples(5, 20)  # other arms have 5 seeds; a baseline has one
  np.testing.assert_array_equal(bootstrap.hierarchical(per_seed, draws), per_seed[0])


def test_seed_variance_widens_the_interval():
  """Seeds that disagree: the protein-only interval (seeds fixed) excludes 0, the one that
  resamples seeds too does not. The verdict follows the wider one."""
  rng = np.random.default_rng(1)
  num, length = 300, 20
  y = rng.random((num, length)) < 0.15
  group = np.repeat(np.arange(num), length)
  noise = [rng.normal(size=y.shape) for _ in range(6)]
  single = [(y * 1.0 + noise[k]).ravel() for k in range(3)]
  two = [(y * q + noise[3 + k]).ravel() for k, q in enumerate((0.7, 1.1, 2.2))]
  y = y.ravel()
  counts = bootstrap.resamples(num, 400, seed=5)
  draws = bootstrap.seed_resamples(3, 400, seed=6)

  def boots(arm):
    return np.array([[bootstrap.Ranked(y, s, group).scores(c)[0] for c in counts] for s in arm])

  b_two, b_single = boots(two), boots(single)
  protein_only = bootstrap.interval(b_two.mean(0) - b_single.mean(0))
  both = bootstrap.interval(
    bootstrap.hierarchical(b_two, draws) - bootstrap.hierarchical(b_single, draws)
  )
  assert protein_only[0] > 0, protein_only
  assert both[0] < 0 < both[1], both
  assert compare_stats.verdict({'auroc_ci': both}) == 'no clear difference'
  assert compare_stats.verdict({'auroc_ci': protein_only}) == 'two-stage is better'


def test_platt_scaling_fixes_a_miscalibrated_score():
  """Scores from a head trained with positive weight 20 overstate the rate; the Platt map
  fitted on validation brings the test ECE down and keeps the ranking."""
  rng = np.random.default_rng(0)

  def data(n):
    y = rng.random(n) < 0.03
    z = np.where(y, 1.5, -1.5) + rng.normal(size=n) + np.log(20)  # log(pos_weight) shift
    return y, 1 / (1 + np.exp(-z))

  y_val, p_val = data(20_000)
  y_test, p_test = data(20_000)
  a, b = calibration.fit_platt(y_val, p_val)
  fixed = calibration.apply_platt(p_test, a, b)
  before, after = calibration.ece(y_test, p_test), calibration.ece(y_test, fixed)
  assert before > 0.2 and after < 0.01, (before, after)
  assert roc_auc_score(y_test, fixed) == pytest.approx(roc_auc_score(y_test, p_test), abs=1e-9)
  # ECE by hand on three bins.
  y = np.array([0, 1, 1, 0])
  p = np.array([0.1, 0.2, 0.9, 0.5])
  # bins of 1/3: {0.1, 0.2} -> |0.15 - 0.5| x 2; {0.5} -> 0.5; {0.9} -> 0.1
  assert calibration.ece(y, p, bins=3) == pytest.approx((2 * 0.35 + 0.5 + 0.1) / 4)


def _flat():
  seqs = ['MSKTSYAK', 'MKKSSTTY', 'MAAAAAAS']
  labels = []
  for seq, sites in zip(seqs, ({1: 0, 5: 0}, {3: 0, 7: 0}, {}), strict=True):
    lab = np.full((len(seq), ptm_types.NUM_TYPES), -1, np.int8)
    for i, a in enumerate(seq):
      if a in 'STY':
        lab[i, 0] = 0
    for i, c in sites.items():
      lab[i, c] = 1
    labels.append(lab)
  return report.Flat.from_examples(seqs, labels)


def test_rows_split_phosphorylation_and_keep_proteins_with_sites_within():
  flat = _flat()
  scores = np.random.default_rng(0).random((len(flat.residues), ptm_types.NUM_TYPES))
  cand = {'phosphorylation': 'STY'}
  assert compare_stats.target_names(['phosphorylation', 'acetylation'])[:3] == [
    'phosphorylation',
    'phosphorylation:ST',
    'phosphorylation:Y',
  ]
  keep, y, _ = compare_stats.targets(flat, scores, cand, 'phosphorylation', [])
  assert set(flat.residues[keep]) == set('STY') and y.sum() == 4
  keep, y, _ = compare_stats.targets(flat, scores, cand, 'phosphorylation:Y', [])
  assert set(flat.residues[keep]) == {'Y'} and y.sum() == 2
  keep, y, _ = compare_stats.targets(flat, scores, cand, 'phosphorylation:ST', [], within=True)
  # The third protein has S/T candidates but no site: left out of the within view.
  assert keep[flat.offsets[2] :].sum() == 0 and keep[: flat.offsets[2]].any()
  assert y.sum() == 2


def test_composition_baseline_scores_proteins_not_residues():
  flat = _flat()
  model = baselines.WindowLogReg(features='composition', C=1.0).fit(
    flat, {'phosphorylation': 'STY'}, ['phosphorylation']
  )
  p = model.predict(flat, {'phosphorylation': 'STY'})[:, 0]
  for a, b in zip(flat.offsets[:-1], flat.offsets[1:], strict=True):
    cand = np.isin(flat.residues[a:b], list('STY'))
    assert np.ptp(p[a:b][cand]) < 1e-12  # one score per protein
  x = baselines.composition_features(flat, np.array([0, 8]))
  assert x.shape == (2, 21)
  np.testing.assert_allclose(x[0, :20].sum(), 10.0)  # shares x 10
  both = baselines.WindowLogReg(features='window+composition').fit(
    flat, {'phosphorylation': 'STY'}, ['phosphorylation']
  )
  assert both.models['phosphorylation'].coef_.shape[1] == 31 * 21 + 21


def test_cluster_bootstrap_equals_brute_force_cluster_resampling():
  rng = np.random.default_rng(5)
  y, group, scores = _toy(num_proteins=12, rng=rng)
  clusters = np.array(list('aabbbcdeefgh'))  # 8 clusters over 12 proteins
  n = 25
  counts = bootstrap.cluster_resamples(clusters, n, seed=2)
  names = sorted(set(clusters))
  draws = np.random.default_rng(2).integers(0, len(names), size=(n, len(names)))
  for b in range(n):
    # Brute force: draw clusters, take every protein of each drawn cluster once per draw.
    proteins = [p for c in draws[b] for p in np.flatnonzero(clusters == names[c])]
    np.testing.assert_array_equal(counts[b], np.bincount(proteins, minlength=12))
    rows = np.concatenate([np.flatnonzero(group == p) for p in proteins])
    fast = bootstrap.Ranked(y, scores[0], group).scores(counts[b])
    slow = (
      roc_auc_score(y[rows], scores[0][rows]),
      average_precision_score(y[rows], scores[0][rows]),
    )
    np.testing.assert_allclose(fast, slow, rtol=1e-10)


def test_duplicated_proteins_exclude_zero_by_protein_but_not_by_cluster():
  # 6 clusters, one of them 20 near-identical copies where arm A wins; elsewhere the arms
  # tie. Resampling proteins treats the copies as 20 observations; clusters, as one.
  rng = np.random.default_rng(0)
  clusters, ys, a, b = [], [], [], []
  for c in range(6):
    for _copy in range(20 if c == 0 else 1):
      y = rng.random(200) < 0.2
      noise = rng.normal(size=200)
      ys.append(y)
      a.append(y * (2.0 if c == 0 else 0.5 + 0.4 * (c % 2)) + noise)
      b.append(y * (0.5 if c == 0 else 0.9 - 0.4 * (c % 2)) + noise)
      clusters.append(c)
  y, sa, sb = np.concatenate(ys), np.concatenate(a), np.concatenate(b)
  group = np.repeat(np.arange(len(clusters)), 200)
  ra, rb = bootstrap.Ranked(y, sa, group), bootstrap.Ranked(y, sb, group)

  def diffs(counts):
    return np.array([ra.scores(c)[0] - rb.scores(c)[0] for c in counts])

  by_protein = bootstrap.interval(diffs(bootstrap.resamples(len(clusters), 400)))
  by_cluster = bootstrap.interval(diffs(bootstrap.cluster_resamples(clusters, 400)))
  assert by_protein[0] > 0
  assert by_cluster[0] < 0 < by_cluster[1]


def test_seed_t_interval_covers_at_five_seeds_where_the_percentile_bootstrap_does_not():
  rng = np.random.default_rng(1)
  trials, seeds, covered_t, covered_boot = 2000, 5, 0, 0
  idx = bootstrap.seed_resamples(seeds, 500, seed=3)
  for _ in range(trials):
    d = rng.normal(0.0, 1.0, seeds)  # true mean 0; the test-set variance is nil here
    lo, hi = bootstrap.seed_and_test_interval(d, np.zeros(50))['ci']
    covered_t += lo <= 0 <= hi
    blo, bhi = bootstrap.interval(d[idx].mean(1))
    covered_boot += blo <= 0 <= bhi
  assert 0.93 < covered_t / trials < 0.97
  assert covered_boot / trials < 0.90  # the undercoverage the t interval corrects


def test_seed_and_test_variances_add():
  d = np.array([0.01, 0.03, 0.02, 0.04, 0.00])
  test = np.random.default_rng(0).normal(0.02, 0.01, 1000)
  r = bootstrap.seed_and_test_interval(d, test)
  assert r['se_seed'] == pytest.approx(d.std(ddof=1) / np.sqrt(5))
  assert r['se_test'] == pytest.approx(test.std(ddof=1))
  se = np.hypot(r['se_seed'], r['se_test'])
  assert r['ci'][1] - r['ci'][0] > 2 * 1.96 * se  # a t quantile, wider than the normal one
  assert 4 <= r['df'] < 1e6


def test_holm_adjusts_against_hand_computed_values():
  # Sorted p 0.01, 0.02, 0.03, 0.5 with m = 4: 0.04, max(0.04, 0.06), max(0.06, 0.06), 0.5.
  out = bootstrap.holm({'a': 0.03, 'b': 0.01, 'c': 0.5, 'd': 0.02, 'e': float('nan')})
  assert out['b'] == pytest.approx(0.04)
  assert out['d'] == pytest.approx(0.06)
  assert out['a'] == pytest.approx(0.06)
  assert out['c'] == pytest.approx(0.5)
  assert np.isnan(out['e'])


def test_verdict_needs_the_holm_adjusted_p_value_as_well_as_the_interval():
  d = {'auroc_ci': (0.001, 0.02)}
  assert compare_stats.verdict(d) == 'two-stage is better'
  held_back = compare_stats.verdict({**d, 'p_holm': 0.2})
  assert held_back.startswith('no clear difference after Holm') and 'p = 0.20' in held_back
  assert compare_stats.verdict({'auroc_ci': (-0.01, 0.02), 'p_holm': 0.01}) == 'no clear difference'
  assert compare_stats.verdict({'auroc_ci': (-0.03, -0.01), 'p_holm': 0.01}) == 'two-stage is worse'
