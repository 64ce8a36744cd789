"""The stage comparison's statistics: per-arm metrics with bootstrap intervals over test
proteins, paired differences between arms, the serine-embedding probe.

Inputs are flat over residues (`ptmjax.evaluation.report.Flat`) and scores per
(arm, seed, split); `compare_report` turns the results into markdown and plots.
"""

from __future__ import annotations

import numpy as np

from ptmjax import checkpoint as ckpt
from ptmjax import inference
from ptmjax.data import ptm_types
from ptmjax.evaluation import bootstrap, metrics, report

ARM_LABELS = {
  'identity': 'residue identity',
  'logreg': 'logistic regression, one-hot +/-15',
  'single': 'single-stage (YAAM only)',
  'two': 'two-stage (ptmDB, then YAAM)',
  'count': 'count pre-task, then YAAM',
}


def targets(flat, scores, candidates, name, mods):
  if name == 'any':
    return report.any_targets(flat, scores, candidates, mods)
  return report.channel_targets(flat, scores, candidates, name)


def compare(config, flat_val, flat_test, scores, candidates, channels, mods) -> dict:
  """Point metrics, bootstrap intervals and paired differences per channel and arm."""
  arms = sorted({a for a, _, _ in scores}, key=list(ARM_LABELS).index)
  seeds = {a: sorted({s for b, s, _ in scores if b == a}) for a in arms}
  counts = bootstrap.resamples(len(flat_test.offsets) - 1, config.report.bootstrap)
  group_of = np.searchsorted(flat_test.offsets, np.arange(len(flat_test.residues)), 'right') - 1
  results = {}
  for name in [*channels, 'any']:
    keep, y, _ = targets(
      flat_test, scores[arms[0], seeds[arms[0]][0], 'test'], candidates, name, mods
    )
    row = {'test_sites': int(y.sum()), 'test_residues': int(len(y)), 'arms': {}}
    boot = {}
    for arm in arms:
      per_seed, boots, thr_metrics = [], [], []
      for seed in seeds[arm]:
        _, y_t, s_t = targets(flat_test, scores[arm, seed, 'test'], candidates, name, mods)
        _, y_v, s_v = targets(flat_val, scores[arm, seed, 'validation'], candidates, name, mods)
        threshold = metrics.best_f1_threshold(y_v, s_v)[0]
        r = metrics.binary_report(y_t, s_t, threshold)
        per_seed.append((r['auroc'], r['auprc']))
        thr_metrics.append((r['f1'], r['mcc']))
        ranked = bootstrap.Ranked(y_t, s_t, group_of[keep])
        boots.append([ranked.scores(c) for c in counts])
      boot[arm] = np.mean(boots, 0)  # [B, 2]: seed-averaged per resample
      per_seed = np.array(per_seed)
      row['arms'][arm] = {
        'auroc': float(per_seed[:, 0].mean()),
        'auprc': float(per_seed[:, 1].mean()),
        'auroc_ci': bootstrap.interval(boot[arm][:, 0]),
        'auprc_ci': bootstrap.interval(boot[arm][:, 1]),
        'auroc_seed_sd': float(per_seed[:, 0].std()),
        'auroc_per_seed': per_seed[:, 0].tolist(),
        'f1_at_val_threshold': float(np.mean([m[0] for m in thr_metrics])),
        'mcc_at_val_threshold': float(np.mean([m[1] for m in thr_metrics])),
      }
    row['differences'] = {}
    for arm in ('two', 'count'):
      if arm in boot and 'single' in boot:
        d = boot[arm] - boot['single']
        row['differences'][f'{arm}-single'] = {
          'auroc': row['arms'][arm]['auroc'] - row['arms']['single']['auroc'],
          'auprc': row['arms'][arm]['auprc'] - row['arms']['single']['auprc'],
          'auroc_ci': bootstrap.interval(d[:, 0]),
          'auprc_ci': bootstrap.interval(d[:, 1]),
          'auroc_share_better': float(np.mean(d[:, 0] > 0)),
          'auprc_share_better': float(np.mean(d[:, 1] > 0)),
        }
    results[name] = row
  return results


def serine_separation(models: dict, val_exs, test_exs, max_len) -> dict:
  """Serine embeddings per model: 2-D PCA of test serines and a linear probe's AUROC
  (logistic regression fitted on validation serines, scored on test serines)."""
  from sklearn.decomposition import PCA
  from sklearn.linear_model import LogisticRegression

  phos = ptm_types.INDEX['phosphorylation']

  def serines(model, tokenizer, exs):
    seqs = [e['sequence'] for e in exs]
    outs, _ = inference.run(
      model, tokenizer, seqs, outputs=('hidden',), max_len=max_len, progress=False
    )
    x, y = [], []
    for seq, e, o in zip(seqs, exs, outs, strict=True):
      lab = np.asarray(e['labels'])[:, phos]
      s = (np.array(list(seq)) == 'S') & (lab >= 0)
      x.append(o['hidden'][s])
      y.append(lab[s] == 1)
    return np.concatenate(x), np.concatenate(y)

  out = {}
  for name, path in models.items():
    model, tokenizer, _ = ckpt.load_model(path)
    xv, yv = serines(model, tokenizer, val_exs)
    xt, yt = serines(model, tokenizer, test_exs)
    probe = LogisticRegression(C=1.0, class_weight='balanced', max_iter=2000)
    mean, sd = xv.mean(0), xv.std(0) + 1e-6
    probe.fit((xv - mean) / sd, yv)
    auc = metrics.auroc(yt, probe.decision_function((xt - mean) / sd))
    pcs = PCA(2, random_state=0).fit_transform(xt)
    out[name] = {'pca': pcs, 'y': yt, 'probe_auroc': auc, 'serines': int(len(yt))}
  return out


def verdict(diff) -> str:
  lo, hi = diff['auroc_ci']
  if lo > 0:
    return 'two-stage is better'
  if hi < 0:
    return 'two-stage is worse'
  return 'no clear difference'
