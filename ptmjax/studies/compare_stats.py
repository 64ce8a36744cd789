"""The stage comparison's statistics: per-arm metrics with intervals over seeds and test
proteins, paired differences between arms and against baselines, calibration, the
frozen-representation probes (per channel, and the blog's serine probe).

Inputs are flat over residues (`ptmjax.evaluation.report.Flat`) and scores per
(arm, seed, split); `compare_report` turns the results into markdown and plots.
"""

from __future__ import annotations

import numpy as np

from ptmjax import checkpoint as ckpt
from ptmjax import inference
from ptmjax.data import ptm_types
from ptmjax.evaluation import bootstrap, metrics, report
from ptmjax.evaluation import calibration as calib

ARM_LABELS = {
  'identity': 'residue identity',
  'composition': 'protein composition + length (logistic regression)',
  'logreg': 'logistic regression, one-hot +/-15',
  'window_composition': 'logistic regression, window +/-15 + composition',
  'single': 'single-stage (YAAM only)',
  'two': 'two-stage (ptmDB, then YAAM)',
  'two_nolys': 'two-stage, lysine channels masked in stage 1',
  'joint': 'joint (YAAM and ptmDB in one stage)',
  'count': 'count pre-task, then YAAM',
}
BASELINES = ('identity', 'composition', 'logreg', 'window_composition')
MODELS = ('single', 'two', 'two_nolys', 'joint', 'count')
# Model-minus-baseline differences reported for every model arm.
AGAINST = ('logreg', 'window_composition', 'composition')


def target_names(channels) -> list[str]:
  """The rows of the tables: each channel, phosphorylation split into S/T and Y (S/T
  first: most sites, and the classic kinase motifs), then 'any'."""
  out = []
  for c in channels:
    out.append(c)
    if c == 'phosphorylation':
      out += ['phosphorylation:ST', 'phosphorylation:Y']
  return [*out, 'any']


def targets(flat, scores, candidates, name, mods, within: bool = False):
  """(keep, y, s) for a table row. 'CHANNEL:LETTERS' keeps those residues of the channel;
  `within` keeps only proteins with at least one site of the row (ranking residues
  inside studied proteins, not ranking proteins by whether they were studied)."""
  channel, _, letters = name.partition(':')
  if channel == 'any':
    keep, y, s = report.any_targets(flat, scores, candidates, mods)
  else:
    keep, y, s = report.channel_targets(flat, scores, candidates, channel)
  if letters:
    sub = np.isin(flat.residues[keep], list(letters))
    keep = keep.copy()
    keep[keep] = sub
    y, s = y[sub], s[sub]
  if within:
    protein = np.searchsorted(flat.offsets, np.flatnonzero(keep), 'right') - 1
    sited = np.zeros(len(flat.offsets) - 1, bool)
    sited[protein[y]] = True
    sub = sited[protein]
    keep = keep.copy()
    keep[keep] = sub
    y, s = y[sub], s[sub]
  return keep, y, s


def _ci_summary(point, boot):
  """point estimate, 95 % interval and share of resamples > 0 of a bootstrap array."""
  return {
    'value': float(point),
    'ci': bootstrap.interval(boot),
    'share_above_zero': float(np.mean(np.asarray(boot)[np.isfinite(boot)] > 0)),
  }


def _arm_metrics(flat_val, flat_test, scores, candidates, name, mods, within, arm, seeds,
                 counts, group_of, seed_draws):  # fmt: skip
  """One arm on one table row and view: the mean over seeds with its joint interval,
  F1/MCC at the validation threshold, and the bootstrap arrays the differences pair."""
  per_seed, boots, thr, val_auroc = [], [], [], []
  for seed in seeds:
    k_t, y_t, s_t = targets(flat_test, scores[arm, seed, 'test'], candidates, name, mods, within)
    t = None
    if not within:  # F1 / MCC at the threshold chosen on validation
      _, y_v, s_v = targets(flat_val, scores[arm, seed, 'validation'], candidates, name, mods)
      t = metrics.best_f1_threshold(y_v, s_v)[0]
      val_auroc.append(metrics.auroc(y_v, s_v))
    r = metrics.binary_report(y_t, s_t, t)
    if not within:
      thr.append((r['f1'], r['mcc']))
    per_seed.append((r['auroc'], r['auprc']))
    ranked = bootstrap.Ranked(y_t, s_t, group_of[k_t])
    boots.append([ranked.scores(c) for c in counts])
  boots = np.asarray(boots)  # [S, B, 2]
  hier = bootstrap.hierarchical(boots, seed_draws)
  prot = boots.mean(0)
  per_seed = np.asarray(per_seed)
  a = {
    'auroc': float(per_seed[:, 0].mean()),
    'auprc': float(per_seed[:, 1].mean()),
    'auroc_ci': bootstrap.interval(hier[:, 0]),
    'auprc_ci': bootstrap.interval(hier[:, 1]),
    'auroc_per_seed': per_seed[:, 0].tolist(),
    'auprc_per_seed': per_seed[:, 1].tolist(),
    'auroc_seed_sd': float(per_seed[:, 0].std(ddof=1)) if len(per_seed) > 1 else 0.0,
    'seeds': len(per_seed),
  }
  if val_auroc:  # what picks "the best arm" in the summary: never the test data
    a['val_auroc'] = float(np.mean(val_auroc))
  if thr:
    a['f1_at_val_threshold'] = float(np.mean([m[0] for m in thr]))
    a['mcc_at_val_threshold'] = float(np.mean([m[1] for m in thr]))
  return a, hier, prot


def _pair_differences(arms: dict, hier: dict, prot: dict) -> dict:
  """Every reported pair of arms: the difference with its seed-and-test interval, p, the
  joint-bootstrap and test-only intervals, and the share of resamples it is ahead."""
  out = {}
  pairs = [('two', 'single'), ('two_nolys', 'single'), ('two_nolys', 'two')]
  pairs += [('joint', 'single'), ('joint', 'two')]
  pairs += [('count', 'single')]
  pairs += [(m, b) for m in MODELS for b in AGAINST]
  for arm, ref in pairs:
    if arm not in hier or ref not in hier:
      continue
    d_h, d_p = hier[arm] - hier[ref], prot[arm] - prot[ref]
    tests = [
      bootstrap.seed_and_test_interval(_paired_seeds(arms, arm, ref, m), d_p[:, i])
      for i, m in enumerate(('auroc', 'auprc'))
    ]
    out[f'{arm}-{ref}'] = {
      'auroc': arms[arm]['auroc'] - arms[ref]['auroc'],
      'auprc': arms[arm]['auprc'] - arms[ref]['auprc'],
      'auroc_ci': tests[0]['ci'],
      'auprc_ci': tests[1]['ci'],
      'p': tests[0]['p'],
      'df': tests[0]['df'],
      'se_seed': tests[0]['se_seed'],
      'se_test': tests[0]['se_test'],
      'auroc_ci_bootstrap': bootstrap.interval(d_h[:, 0]),
      'auprc_ci_bootstrap': bootstrap.interval(d_h[:, 1]),
      'auroc_ci_proteins_only': bootstrap.interval(d_p[:, 0]),
      'auroc_share_better': float(np.mean(d_h[:, 0] > 0)),
      'auprc_share_better': float(np.mean(d_h[:, 1] > 0)),
    }
  return out


def compare(
  config, flat_val, flat_test, scores, candidates, channels, mods, calibrations=None,
  test_clusters=None,
):  # fmt: skip
  """Metrics, intervals and paired differences per table row, view and arm.

  Intervals resample test proteins and trained seeds together (`bootstrap.hierarchical`):
  a difference between arms counts the seed-to-seed spread of training as well as
  which proteins happened to be in the test split. Every arm is scored on the same
  resamples, so differences are paired. The protein-only interval (seeds fixed and
  averaged, as earlier versions reported) is kept beside it for comparison.

  Args:
    scores: {(arm, seed, split): [N, 16] probabilities}; baselines have one seed.
    calibrations: {(arm, seed): {channel: [a, b]}} stored with each model (optional).
    test_clusters: [P] the homology cluster of each test protein: resamples draw whole
      clusters (`bootstrap.cluster_resamples`); None resamples single proteins.

  Each difference's `auroc_ci` and `p` come from `bootstrap.seed_and_test_interval` (the
  seed variance with its degrees of freedom, plus the cluster-resample variance);
  `p_holm` adjusts `p` across every row and view of the same pair, and the verdicts
  (`verdict`) need both the interval and `p_holm`. The percentile interval of the
  joint bootstrap is kept as `auroc_ci_bootstrap`.

  Returns:
    {row: {'test_sites', 'test_residues', 'views': {'pooled'|'within': {...}},
           'calibration': {...}}}; the pooled view holds 'arms' and 'differences'.
  """
  arms = sorted({a for a, _, _ in scores}, key=list(ARM_LABELS).index)
  seeds = {a: sorted({s for b, s, _ in scores if b == a}) for a in arms}
  n_boot = config.report.bootstrap
  if test_clusters is not None:
    counts = bootstrap.cluster_resamples(test_clusters, n_boot)
  else:
    counts = bootstrap.resamples(len(flat_test.offsets) - 1, n_boot)
  max_seeds = max(len(v) for v in seeds.values())
  seed_draws = bootstrap.seed_resamples(max_seeds, n_boot)
  group_of = np.searchsorted(flat_test.offsets, np.arange(len(flat_test.residues)), 'right') - 1
  first = (arms[0], seeds[arms[0]][0])
  results = {}
  for name in target_names(channels):
    keep, y, _ = targets(flat_test, scores[(*first, 'test')], candidates, name, mods)
    if y.sum() == 0 or (~y).sum() == 0:
      continue
    row = {'test_sites': int(y.sum()), 'test_residues': int(len(y)), 'views': {}}
    for view in ('pooled', 'within'):
      within = view == 'within'
      keep, y, _ = targets(flat_test, scores[(*first, 'test')], candidates, name, mods, within)
      if y.sum() == 0 or (~y).sum() == 0:
        continue
      out = {
        'sites': int(y.sum()),
        'residues': int(len(y)),
        'proteins': int(len(np.unique(group_of[keep]))),
        'arms': {},
        'differences': {},
      }
      hier, prot = {}, {}
      for arm in arms:
        out['arms'][arm], hier[arm], prot[arm] = _arm_metrics(
          flat_val, flat_test, scores, candidates, name, mods, within, arm, seeds[arm],
          counts, group_of, seed_draws,
        )  # fmt: skip
      out['differences'] = _pair_differences(out['arms'], hier, prot)
      row['views'][view] = out
    if ':' not in name and name != 'any':
      row['calibration'] = _calibration(
        flat_test, scores, candidates, name, mods, arms, seeds, calibrations or {}
      )
    results[name] = row
  _holm(results)
  return results


def _paired_seeds(arms: dict, arm: str, ref: str, metric: str) -> np.ndarray:
  """Per-seed differences arm - ref on the whole test set, paired by seed index (the
  study trains every arm on the same seeds); a one-seed baseline pairs with each."""
  a = np.asarray(arms[arm][f'{metric}_per_seed'], np.float64)
  b = np.asarray(arms[ref][f'{metric}_per_seed'], np.float64)
  if len(b) == 1 or len(a) == 1:
    return a - b
  n = min(len(a), len(b))
  return a[:n] - b[:n]


def _holm(results: dict) -> None:
  """Adds 'p_holm' to every difference: Holm's adjustment over all rows and views of the
  same pair (7 rows x 2 views tested at once must not each get a 5 % error rate)."""
  pairs = {}
  for name, row in results.items():
    for view, out in row['views'].items():
      for pair, d in out['differences'].items():
        pairs.setdefault(pair, {})[name, view] = d['p']
  for pair, ps in pairs.items():
    for (name, view), p in bootstrap.holm(ps).items():
      results[name]['views'][view]['differences'][pair]['p_holm'] = p


def _calibration(flat_test, scores, candidates, name, mods, arms, seeds, calibrations):
  """Expected calibration error on test per model arm: raw, and with the Platt map stored
  with each model (fitted on validation by the trainer); mean over seeds."""
  out = {}
  for arm in arms:
    raw, cal = [], []
    for seed in seeds[arm]:
      _, y, s = targets(flat_test, scores[arm, seed, 'test'], candidates, name, mods)
      raw.append(calib.ece(y, s))
      ab = calibrations.get((arm, seed), {}).get(name)
      if ab:
        cal.append(calib.ece(y, calib.apply_platt(s, *ab)))
    out[arm] = {'ece': float(np.mean(raw))}
    if cal:
      out[arm]['ece_calibrated'] = float(np.mean(cal))
  return out


def transfer_curve(config, flat_test, scores, candidates, channels, mods) -> dict:
  """{channel: {fraction: {arm: AUROC + interval, 'two-single': difference}}}, intervals
  over the curve's seeds and test proteins (as the main table)."""
  fractions = sorted({k[2] for k in scores})
  counts = bootstrap.resamples(len(flat_test.offsets) - 1, config.report.bootstrap)
  group_of = np.searchsorted(flat_test.offsets, np.arange(len(flat_test.residues)), 'right') - 1
  out = {}
  for name in channels:
    out[name] = {}
    for fraction in fractions:
      seeds = sorted({k[1] for k in scores if k[2] == fraction})
      draws = bootstrap.seed_resamples(len(seeds), config.report.bootstrap)
      hier, point = {}, {}
      for arm in ('single', 'two'):
        boots, per_seed = [], []
        for seed in seeds:
          keep, y, s = targets(
            flat_test, scores[arm, seed, fraction, 'test'], candidates, name, mods
          )
          per_seed.append(metrics.auroc(y, s))
          boots.append([bootstrap.Ranked(y, s, group_of[keep]).scores(c)[0] for c in counts])
        hier[arm] = bootstrap.hierarchical(np.asarray(boots), draws)
        point[arm] = float(np.mean(per_seed))
      d = hier['two'] - hier['single']
      out[name][str(fraction)] = {
        **{arm: {'auroc': point[arm], 'ci': bootstrap.interval(hier[arm])} for arm in hier},
        'two-single': {
          'auroc': point['two'] - point['single'],
          'auroc_ci': bootstrap.interval(d),
          'auroc_share_better': float(np.mean(d > 0)),
        },
        'seeds': seeds,
      }
  return out


def representation(path, val_exs, test_exs, max_len, candidates, channels) -> dict:
  """What a frozen encoder knows: per channel, a linear probe (standardised logistic
  regression, balanced classes) fitted on the hidden states of the validation proteins'
  candidate residues and scored (AUROC) on the test proteins'; 'serine' is the blog's
  probe on serines alone (phosphorylated or not), with the 2-D PCA of the test serines.

  Returns {'probe': {name: auroc}, 'test_sites': {name: n}, 'serine_pca': [[x, y], ...],
  'serine_y': [bool, ...]} (JSON-ready: a study caches it per model digest)."""
  from sklearn.decomposition import PCA
  from sklearn.linear_model import LogisticRegression

  model, tokenizer, _ = ckpt.load_model(path)

  def hidden(exs):
    seqs = [e['sequence'] for e in exs]
    outs, _ = inference.run(
      model, tokenizer, seqs, outputs=('hidden',), max_len=max_len, progress=False
    )
    flat = report.Flat.from_examples(seqs, [e['labels'] for e in exs])
    return flat, np.concatenate([o['hidden'] for o in outs])

  (flat_v, h_v), (flat_t, h_t) = hidden(val_exs), hidden(test_exs)
  phos = ptm_types.INDEX['phosphorylation']
  rows = {c: None for c in channels}
  rows['serine'] = None
  out = {'probe': {}, 'test_sites': {}}
  for name in rows:
    if name == 'serine':
      keep_v = (flat_v.residues == 'S') & (flat_v.labels[:, phos] >= 0)
      keep_t = (flat_t.residues == 'S') & (flat_t.labels[:, phos] >= 0)
      y_v, y_t = flat_v.labels[keep_v, phos] == 1, flat_t.labels[keep_t, phos] == 1
    else:
      keep_v, y_v, _ = report.channel_targets(flat_v, np.zeros(flat_v.labels.shape), candidates,
                                              name)  # fmt: skip
      keep_t, y_t, _ = report.channel_targets(flat_t, np.zeros(flat_t.labels.shape), candidates,
                                              name)  # fmt: skip
    if min(y_v.sum(), (~y_v).sum(), y_t.sum(), (~y_t).sum()) == 0:
      continue
    xv, xt = h_v[keep_v], h_t[keep_t]
    mean, sd = xv.mean(0), xv.std(0) + 1e-6
    probe = LogisticRegression(C=1.0, class_weight='balanced', max_iter=2000)
    probe.fit((xv - mean) / sd, y_v)
    out['probe'][name] = float(metrics.auroc(y_t, probe.decision_function((xt - mean) / sd)))
    out['test_sites'][name] = int(y_t.sum())
    if name == 'serine':
      pcs = PCA(2, random_state=0).fit_transform(xt)
      out['serine_pca'] = np.round(pcs, 4).tolist()
      out['serine_y'] = y_t.tolist()
  return out


PROBE_LABELS = {
  'init': 'initial encoder (stage 0)',
  'stage1': 'after stage 1 (ptmDB)',
  'stage1_nolys': 'after stage 1 without lysine channels',
  'single': 'single-stage (YAAM)',
  'two': 'two-stage (ptmDB, then YAAM)',
  'two_nolys': 'two-stage, lysine channels masked in stage 1',
  'joint': 'joint (YAAM and ptmDB in one stage)',
}


def probe_table(reps: dict) -> dict:
  """{model kind: {probe: {'mean', 'sd', 'per_seed', 'test_sites'}}} of the
  representations {'KIND/SEED' or 'init': representation(...)}; kinds in PROBE_LABELS
  order, probes as each representation holds them."""
  grouped = {}
  for name, r in reps.items():
    kind = name.split('/')[0]
    for probe, value in r['probe'].items():
      cell = grouped.setdefault(kind, {}).setdefault(
        probe, {'per_seed': [], 'test_sites': r['test_sites'][probe]}
      )
      cell['per_seed'].append(value)
  out = {}
  for kind in [k for k in PROBE_LABELS if k in grouped]:
    out[kind] = {}
    for probe, cell in grouped[kind].items():
      v = np.asarray(cell['per_seed'])
      out[kind][probe] = {
        **cell,
        'mean': float(v.mean()),
        'sd': float(v.std(ddof=1)) if len(v) > 1 else 0.0,
      }
  return out


def call(diff) -> str:
  """The project's one call rule: 'better' or 'worse' only when the interval (seeds and
  test clusters) excludes 0 and, where present, the Holm-adjusted p-value across rows is
  below 0.05; 'held' when the interval alone excludes 0; 'none' otherwise."""
  lo, hi = diff['auroc_ci']
  if lo <= 0 <= hi:
    return 'none'
  if diff.get('p_holm', 0.0) >= 0.05:
    return 'held'
  return 'better' if lo > 0 else 'worse'


def verdict(diff, better='two-stage is better', worse='two-stage is worse') -> str:
  """The words for `call`."""
  c = call(diff)
  if c == 'held':
    # Said, so that a reader who sees an interval without 0 knows why it is not called.
    p = diff['p_holm']
    return (
      f'no clear difference after Holm across rows (p = {p:.2f}; the interval alone excludes 0)'
    )
  return {'none': 'no clear difference', 'better': better, 'worse': worse}[c]
