"""The stage comparison's report: ROC/PR curves, probability histograms, serine PCA,
learning curves (PNG) and report.md, from the results `compare_stats` computed."""

from __future__ import annotations

import json

import numpy as np

from ptmjax.evaluation import metrics
from ptmjax.studies.compare_stats import ARM_LABELS, targets, verdict


def plots(outdir, flat_test, scores, candidates, mods, channels, runs, separation, init_scores):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  files = {}
  arms = [a for a in ARM_LABELS if any(k[0] == a for k in scores)]
  names = [c for c in channels][:2] + ['any']
  fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 9))
  for j, name in enumerate(names):
    for arm in arms:
      _, y, s = targets(
        flat_test, scores[arm, min_seed(scores, arm), 'test'], candidates, name, mods
      )
      fpr, tpr, rec, prec = metrics.curves(y, s)
      axes[0, j].plot(fpr, tpr, label=f'{ARM_LABELS[arm]} ({metrics.auroc(y, s):.3f})')
      axes[1, j].plot(rec, prec, label=f'{ARM_LABELS[arm]} ({metrics.auprc(y, s):.3f})')
    axes[0, j].plot([0, 1], [0, 1], 'k:', lw=0.8)
    axes[0, j].set(
      title=f'{name}: ROC (test)', xlabel='false positive rate', ylabel='true positive rate'
    )
    axes[1, j].set(title=f'{name}: precision-recall (test)', xlabel='recall', ylabel='precision')
    for ax in axes[:, j]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  files['roc_pr'] = _save(fig, outdir / 'roc_pr.png')

  # The blog's histogram: probabilities for modified vs unmodified candidate residues.
  name = channels[0]
  panels = [('before fine-tuning (initial model, untrained head)', init_scores)]
  for arm in ('single', 'two'):
    if (arm, min_seed(scores, arm), 'test') in scores:
      panels.append((f'after: {ARM_LABELS[arm]}', scores[arm, min_seed(scores, arm), 'test']))
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
  for ax, (title, sc) in zip(np.atleast_1d(axes), panels, strict=True):
    _, y, s = targets(flat_test, sc, candidates, name, mods)
    bins = np.linspace(0, 1, 41)
    ax.hist(s[~y], bins, alpha=0.6, density=True, label=f'unmodified ({(~y).sum():,})')
    ax.hist(s[y], bins, alpha=0.6, density=True, label=f'modified ({y.sum():,})')
    ax.set(title=title, xlabel=f'predicted P({name})', ylabel='density')
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  files['histograms'] = _save(fig, outdir / 'probability_histograms.png')

  if separation:
    fig, axes = plt.subplots(1, len(separation), figsize=(4.5 * len(separation), 4))
    for ax, (title, r) in zip(np.atleast_1d(axes), separation.items(), strict=True):
      pcs, y = r['pca'], r['y']
      ax.scatter(*pcs[~y].T, s=3, alpha=0.3, label='unmodified S')
      ax.scatter(*pcs[y].T, s=5, alpha=0.7, label='phosphorylated S')
      ax.set(
        title=f'{title}\nlinear probe AUROC {r["probe_auroc"]:.3f}', xlabel='PC1', ylabel='PC2'
      )
      ax.title.set_fontsize(9)
      ax.legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    files['pca'] = _save(fig, outdir / 'serine_pca.png')

  metric = f'val/{channels[0]}/auroc'
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for (arm, seed), workdir in runs.items():
    rows = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
    loss = [(r['step'], r['loss']) for r in rows if 'loss' in r]
    val = [(r['step'], r[metric]) for r in rows if metric in r and r['step'] > 0]
    style = dict(color=f'C{list(ARM_LABELS).index(arm) if arm in ARM_LABELS else 5}', alpha=0.8)
    label = f'{ARM_LABELS.get(arm, arm)}' if seed == min(s for a, s in runs if a == arm) else None
    if loss:
      axes[0].plot(*zip(*loss, strict=True), label=label, **style)
    if val:
      axes[1].plot(*zip(*val, strict=True), marker='o', label=label, **style)
  axes[0].set(title='training loss', xlabel='step', yscale='log')
  axes[1].set(title=f'{metric} (validation subset)', xlabel='step')
  for ax in axes:
    ax.legend(fontsize=7)
  fig.tight_layout()
  files['learning_curves'] = _save(fig, outdir / 'learning_curves.png')
  plt.close('all')
  return files


def min_seed(scores, arm):
  return min(s for a, s, _ in scores if a == arm)


def _save(fig, path):
  fig.savefig(path, dpi=110)
  return path.name


def _fmt(x, ci=None, signed=False):
  s = f'{x:+.3f}' if signed else f'{x:.3f}'
  if ci is not None:
    s += f' [{ci[0]:+.3f}, {ci[1]:+.3f}]' if signed else f' [{ci[0]:.3f}, {ci[1]:.3f}]'
  return s


def write_report(outdir, config, results, info, files, separation, command, wall_s):
  lines = [f'# Single-stage vs two-stage PTM prediction ({config.size})', '']
  main = [c for c in results if c != 'any']
  # Plain-language summary first.
  summary = []
  for name in [*main, 'any']:
    d = results[name]['differences'].get('two-single')
    if d is None:
      continue
    a = results[name]['arms']
    summary.append(
      f'- **{name}**: {verdict(d)} — AUROC {a["two"]["auroc"]:.3f} two-stage vs '
      f'{a["single"]["auroc"]:.3f} single-stage, difference {_fmt(d["auroc"], d["auroc_ci"], True)} '
      f'(95 % bootstrap interval over test proteins; two-stage ahead in '
      f'{100 * d["auroc_share_better"]:.0f} % of resamples). Baselines: residue identity '
      f'{a["identity"]["auroc"]:.3f}, window logistic regression {a["logreg"]["auroc"]:.3f}.'
    )
  lines += ['## Summary', '', *summary, '']
  if any('count-single' in results[n]['differences'] for n in results):
    d = results[main[0]]['differences']['count-single']
    lines += [
      f"The blog's count pre-task (per-protein PTM counts first): {main[0]} AUROC difference "
      f'to single-stage {_fmt(d["auroc"], d["auroc_ci"], True)}.',
      '',
    ]
  lines += [
    '## Set-up',
    '',
    f'- Command: `{command}`',
    f'- Git revision: `{info["git"]}`; wall time {wall_s / 60:.1f} min (all stages and this '
    f'report); machine: {info["machine"]}',
    f'- Seeds: {info["seeds"]}; every arm starts from the same weights ({info["init"]}).',
    f'- Evaluation: `{info["target"]}` (the stage-2 dataset), {info["test_proteins"]} proteins; '
    f'thresholds for F1/MCC chosen on validation ({info["val_proteins"]} proteins). '
    f'Intervals: {config.report.bootstrap} bootstrap resamples of test proteins, '
    f'paired across arms, seed-averaged.',
    (
      f'- Stage 1 homology filter: {info["homologs_removed"]} of '
      f'{info["stage1_proteins_before"]} stage-1 training proteins removed as homologous to '
      f'{info["homologs_of"]} (MMseqs2, 30 % identity, 80 % coverage).'
      if info['homologs_removed'] is not None
      else '- Stage 1 homology filter: not applied (synthetic sequences are drawn independently).'
    ),
    f'- Candidates: {json.dumps({c: info["candidates"].get(c, "all") for c in main})}.',
    '',
    '## Results on candidate residues',
    '',
    '| channel | arm | AUROC [95 % CI] | AUPRC [95 % CI] | F1 @ val thr. | MCC @ val thr. |',
    '|---|---|---|---|---|---|',
  ]
  for name, row in results.items():
    label = name if name != 'any' else 'any PTM (all residues)'
    for arm, r in row['arms'].items():
      lines.append(
        f'| {label} ({row["test_sites"]} sites / {row["test_residues"]}) | {ARM_LABELS[arm]} | '
        f'{_fmt(r["auroc"], r["auroc_ci"])} | {_fmt(r["auprc"], r["auprc_ci"])} | '
        f'{r["f1_at_val_threshold"]:.3f} | {r["mcc_at_val_threshold"]:.3f} |'
      )
  lines += ['', '### Paired differences (seed-averaged)', '']
  lines += ['| channel | difference | AUROC [95 % CI] | AUPRC [95 % CI] | resamples better |']
  lines += ['|---|---|---|---|---|']
  for name, row in results.items():
    for k, d in row['differences'].items():
      lines.append(
        f'| {name} | {k} | {_fmt(d["auroc"], d["auroc_ci"], True)} | '
        f'{_fmt(d["auprc"], d["auprc_ci"], True)} | {100 * d["auroc_share_better"]:.0f} % |'
      )
  if separation:
    lines += ['', '## Serine embeddings', '']
    lines += ['Linear-probe AUROC (logistic regression fitted on validation serines, scored on']
    lines += ['test serines) separating phosphorylated from unmodified serines:', '']
    for name, r in separation.items():
      lines.append(f'- {name}: {r["probe_auroc"]:.3f} ({r["serines"]} test serines)')
  lines += ['', '## Plots', '']
  for key, f in files.items():
    lines += [f'![{key}]({f})', '']
  (outdir / 'report.md').write_text('\n'.join(lines) + '\n')
