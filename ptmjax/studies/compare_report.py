"""The stage comparison's report: ROC/PR curves, probability histograms, serine PCA,
learning curves (PNG) and report.md, from the results `compare_stats` computed."""

from __future__ import annotations

import io
import json

import numpy as np

from ptmjax.evaluation import calibration as calib
from ptmjax.evaluation import metrics
from ptmjax.run_dir import RunDir
from ptmjax.studies.compare_stats import ARM_LABELS, MODELS, PROBE_LABELS, targets, verdict


def plots(
  outdir, flat_test, scores, candidates, mods, channels, runs, separation, init_scores,
  calibrations=None, curve=None,
):  # fmt: skip
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  files = {}
  _plot_roc_pr(plt, files, outdir, flat_test, scores, candidates, mods, channels)
  _plot_histograms(plt, files, outdir, flat_test, scores, candidates, mods, channels, init_scores)
  if separation:
    _plot_pca(plt, files, outdir, separation)
  _plot_learning_curves(plt, files, outdir, channels, runs)
  if calibrations:
    _plot_reliability(
      plt, files, outdir, flat_test, scores, candidates, mods, channels, calibrations
    )
  if curve:
    _plot_transfer(plt, files, outdir, curve)
  plt.close('all')
  return files


def _plot_roc_pr(plt, files, outdir, flat_test, scores, candidates, mods, channels) -> None:
  """ROC and precision-recall curves of every arm (test)."""
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


def _plot_histograms(
  plt, files, outdir, flat_test, scores, candidates, mods, channels, init_scores
) -> None:
  """The blog's probability histograms, before and after fine-tuning."""
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


def _plot_pca(plt, files, outdir, separation) -> None:
  """Serine-embedding PCA per encoder."""
  fig, axes = plt.subplots(1, len(separation), figsize=(4.5 * len(separation), 4))
  for ax, (title, r) in zip(np.atleast_1d(axes), separation.items(), strict=True):
    pcs, y = r['pca'], r['y']
    ax.scatter(*pcs[~y].T, s=3, alpha=0.3, label='unmodified S')
    ax.scatter(*pcs[y].T, s=5, alpha=0.7, label='phosphorylated S')
    ax.set(title=f'{title}\nlinear probe AUROC {r["probe_auroc"]:.3f}', xlabel='PC1', ylabel='PC2')
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, markerscale=3)
  fig.tight_layout()
  files['pca'] = _save(fig, outdir / 'serine_pca.png')


def _plot_learning_curves(plt, files, outdir, channels, runs) -> None:
  """Training loss and validation AUROC of every run."""
  metric = f'val/{channels[0]}/auroc'
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for (arm, seed), workdir in runs.items():
    rows = RunDir(workdir).metric_rows()
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


def _plot_reliability(
  plt, files, outdir, flat_test, scores, candidates, mods, channels, calibrations
) -> None:
  """Reliability diagrams, raw and calibrated."""
  fig, axes = plt.subplots(1, len(channels), figsize=(4.2 * len(channels), 4), squeeze=False)
  for ax, name in zip(axes[0], channels, strict=True):
    for arm in ('single', 'two'):
      if (arm, min_seed(scores, arm), 'test') not in scores:
        continue
      seed = min_seed(scores, arm)
      _, y, s = targets(flat_test, scores[arm, seed, 'test'], candidates, name, mods)
      pred, obs, _ = calib.reliability(y, s)
      ax.plot(pred, obs, 'o-', ms=3, label=f'{ARM_LABELS[arm]}, raw')
      ab = calibrations.get((arm, seed), {}).get(name)
      if ab:
        pred, obs, _ = calib.reliability(y, calib.apply_platt(s, *ab))
        ax.plot(pred, obs, 's--', ms=3, label=f'{ARM_LABELS[arm]}, calibrated')
    ax.plot([0, 1], [0, 1], 'k:', lw=0.8)
    ax.set(title=f'{name}: reliability (test)', xlabel='predicted', ylabel='observed rate')
    ax.legend(fontsize=6)
  fig.tight_layout()
  files['reliability'] = _save(fig, outdir / 'reliability.png')


def _plot_transfer(plt, files, outdir, curve) -> None:
  """Test AUROC against the share of training proteins."""
  fig, axes = plt.subplots(1, len(curve), figsize=(4.2 * len(curve), 3.8), squeeze=False)
  for ax, (name, by_fraction) in zip(axes[0], curve.items(), strict=True):
    xs = [float(f) for f in by_fraction]
    for arm, color in (('single', 'C2'), ('two', 'C3')):
      ys = [r[arm]['auroc'] for r in by_fraction.values()]
      lo = [r[arm]['ci'][0] for r in by_fraction.values()]
      hi = [r[arm]['ci'][1] for r in by_fraction.values()]
      ax.plot(xs, ys, 'o-', color=color, label=ARM_LABELS[arm])
      ax.fill_between(xs, lo, hi, color=color, alpha=0.2)
    ax.set(xscale='log', title=f'{name}', xlabel='share of YAAM training proteins',
           ylabel='test AUROC')  # fmt: skip
    ax.set_xticks(xs, [f'{x:.0%}' for x in xs])
    ax.legend(fontsize=7)
  fig.tight_layout()
  files['transfer_curve'] = _save(fig, outdir / 'transfer_curve.png')


def min_seed(scores, arm):
  return min(s for a, s, _ in scores if a == arm)


def _save(fig, path):
  """Saves a PNG (local or gs://: matplotlib writes only local files by name)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=110)
  path.write_bytes(buffer.getvalue())
  return path.name


def _fmt(x, ci=None, signed=False):
  s = f'{x:+.3f}' if signed else f'{x:.3f}'
  if ci is not None:
    s += f' [{ci[0]:+.3f}, {ci[1]:+.3f}]' if signed else f' [{ci[0]:.3f}, {ci[1]:.3f}]'
  return s


def _diff_line(d, key='auroc'):
  return _fmt(d[key], d[f'{key}_ci'], True)


def write_report(outdir, config, results, info, files, separation, command, wall_s, training_s,
                 curve=None, probes=None):  # fmt: skip
  lines = [f'# Single-stage vs two-stage PTM prediction ({config.size})', '']
  ci_words, unit = _intervals(info)
  lines += _summary(results, ci_words)
  lines += _stage1_gate(info)
  lines += _setup(config, results, info, command, wall_s, training_s, ci_words)
  lines += _recipes(info)
  lines += _result_tables(results, info)
  lines += _differences(results, ci_words, unit)
  lines += _calibration(results)
  lines += _transfer(curve)
  lines += _runs(info)
  lines += _probes(config, probes)
  lines += _serine(separation)
  lines += ['', '## Plots', '']
  for key, f in files.items():
    lines += [f'![{key}]({f})', '']
  (outdir / 'report.md').write_text('\n'.join(lines) + '\n')


def _intervals(info):
  """The interval words every table repeats, and the resampled unit."""
  seeds = len(info['seeds'])
  unit = 'homology clusters' if info.get('resample') == 'clusters' else 'proteins'
  ci_words = (
    f'95 % interval over the {seeds} trained seeds (Student t, {seeds - 1} degrees of freedom '
    f'for the seed variance) and test {unit} (resampled), added; a verdict needs the '
    'interval to exclude 0 and the Holm-adjusted p-value across all rows and views of '
    'the pair to be below 0.05'
    if seeds > 1
    else '95 % interval over test proteins only (one trained seed: the seed-to-seed spread is '
    'not measured)'
  )
  return ci_words, unit


def _summary(results, ci_words):
  """The plain-language verdicts, each following its interval."""
  lines = []
  # Plain-language summary first: every verdict follows its interval.
  summary = []
  for name, row in results.items():
    pooled = row['views'].get('pooled')
    if not pooled or 'two-single' not in pooled['differences']:
      continue
    d, a = pooled['differences']['two-single'], pooled['arms']
    # The best model arm by validation AUROC (test data choose nothing).
    best = max((m for m in MODELS if m in a), key=lambda m: a[m].get('val_auroc', 0.0))
    vs = pooled['differences'].get(f'{best}-logreg')
    text = (
      f'- **{name}**: {verdict(d)} — AUROC {a["two"]["auroc"]:.3f} two-stage vs '
      f'{a["single"]["auroc"]:.3f} single-stage, difference {_diff_line(d)} (two-stage ahead '
      f'in {100 * d["auroc_share_better"]:.0f} % of resamples).'
    )
    if vs:
      text += (
        f' Best arm on validation ({ARM_LABELS[best]}) minus the window regression '
        f'({a["logreg"]["auroc"]:.3f}): {_diff_line(vs)}, '
        f'{verdict(vs, "the model beats it", "the regression is better")}.'
      )
    summary.append(text)
  lines += ['## Summary', '', f'Intervals: {ci_words}.', '', *summary, '']
  return lines


def _stage1_gate(info):
  """Whether stage 1 beats a window regression on ptmDB validation."""
  lines = []
  gate = info.get('stage1_check')
  if gate:
    s1 = ', '.join(f'{v:.3f}' for v in gate['stage1'].values())
    lines += [
      f'Stage 1 on ptmDB validation ({gate["proteins"]} proteins, `{gate["metric"]}`): '
      f'{s1} per seed, against {gate["window_logreg"]:.3f} for a window regression fitted on '
      f'the same stage-1 training proteins — '
      + ('stage 1 beats it on every seed.' if gate['beats_baseline'] else
         '**stage 1 does not beat it on every seed**: transfer from it is transfer from a '
         'model weaker than a motif regression.'),
      '',
    ]  # fmt: skip
  return lines


def _setup(config, results, info, command, wall_s, training_s, ci_words):
  """The command, revision, seeds, data and filters of the study."""
  lines = [
    '## Set-up',
    '',
    f'- Command: `{command}`',
    f'- Git revision: `{info["git"]}`; wall time {wall_s / 60:.1f} min (all stages and this '
    f'report), of which training {training_s / 60:.1f} min; machine: {info["machine"]}',
    f'- Seeds: {info["seeds"]}; every arm starts from the same weights ({info["init"]}).',
    f'- Evaluation: `{info["target"]}` (the stage-2 dataset), {info["test_proteins"]} proteins; '
    f'thresholds for F1/MCC chosen on validation ({info["val_proteins"]} proteins). '
    f'Intervals: {config.report.bootstrap} resamples; {ci_words}; paired across arms.',
    (
      f'- Stage 1 homology filter: {info["homologs_removed"]} of '
      f'{info["stage1_proteins_before"]} stage-1 training proteins removed as homologous to '
      f'{info["homologs_of"]} (MMseqs2, 30 % identity, 80 % coverage).'
      if info['homologs_removed'] is not None
      else '- Stage 1 homology filter: not applied (synthetic sequences are drawn independently).'
    ),
  ]
  inits = info.get('seed_inits') or {}
  if set(inits.values()) - {info.get('init_sha256')}:  # archived: stage 0 on another machine
    by = {}
    for seed, digest in inits.items():
      by.setdefault(digest, []).append(seed)
    lines.append(
      '- Initial weights per seed (stage 0, the same settings, data and seed, trained on '
      'different machine kinds, whose rounding differs; within a seed every arm starts '
      'from the same weights, so the differences stay paired): '
      + '; '.join(f'seeds {", ".join(s)}: `{d}`' for d, s in by.items())
      + '.'
    )
  found = info.get('homologs_found') or {}
  if found:  # both search directions (issue 25): what each one found
    lines.append(
      '- Homolog search both ways (a protein found in either direction is removed): '
      + '; '.join(f'{k.replace("_", " ")}: {v}' for k, v in found.items())
      + '.'
    )
  if info.get('taxa_removed') is not None:
    lines.append(
      f'- ptmDB proteins of taxa {info["exclude_taxa"]} (S. cerevisiae) dropped from stage 1: '
      f'{info["taxa_removed"]} (their labels contradict YAAM on shared proteins).'
    )
  if info.get('yaam_train_homologs_removed') is not None:
    lines.append(
      f'- YAAM training proteins homologous to a validation or test protein (all against '
      f'all, same thresholds) removed from supervised training: '
      f'{info["yaam_train_homologs_removed"]} (left: {info["yaam_train_proteins"]}).'
    )
  main = [c for c in results if ':' not in c and c != 'any']
  lines += [
    f'- Candidates: {json.dumps({c: info["candidates"].get(c, "all") for c in main})}.',
    f'- Loss weights per channel: {json.dumps(info.get("loss_channels"))} (other channels '
    'are not trained).',
  ]
  return lines


def _recipes(info):
  """The stage-2 recipe grid chosen on validation."""
  lines = []
  recipes = info.get('recipes') or {}
  if len(recipes.get('recipes', {})) > 1:
    metric = info.get('select_metric', 'the validation metric')
    lines += ['', f'### Stage-2 recipe, chosen on validation `{metric}` per arm and seed', '']
    lines += ['| seed | arm | ' + ' | '.join(recipes['recipes']) + ' | chosen |']
    lines += ['|---|---|' + '---|' * (len(recipes['recipes']) + 1)]
    for seed, arms in recipes['grid'].items():
      for arm, values in arms.items():
        cells = ' | '.join(f'{values[r]:.3f}' for r in recipes['recipes'])
        chosen = recipes['per_seed'][seed][arm]
        lines.append(f'| {seed} | {ARM_LABELS.get(arm, arm)} | {cells} | {chosen} |')
    lines += ['', 'Recipes: ' + '; '.join(
      f'`{k}` = {json.dumps(v)}' for k, v in recipes['recipes'].items()) + '.']  # fmt: skip
  return lines


def _result_tables(results, info):
  """Per-arm metrics, pooled and within studied proteins."""
  lines = []
  for view, title in (
    ('pooled', 'Results on candidate residues (pooled over test proteins)'),
    ('within', 'Within studied proteins (only test proteins with at least one site of the row)'),
  ):
    lines += ['', f'## {title}', '']
    header = '| row | arm | AUROC [95 % CI] | AUPRC [95 % CI] |'
    if view == 'pooled':
      header += ' F1 @ val thr. | MCC @ val thr. |'
    lines += [header, '|---|---|---|---|' + ('---|---|' if view == 'pooled' else '')]
    for name, row in results.items():
      v = row['views'].get(view)
      if not v:
        continue
      label = name
      if name == 'any':
        label = f'any PTM of {"/".join(info.get("any_channels") or ["all channels"])}'

      label += f' ({v["sites"]} sites / {v["residues"]}, {v["proteins"]} proteins)'
      for arm, r in v['arms'].items():
        cells = f'| {label} | {ARM_LABELS[arm]} | {_fmt(r["auroc"], r["auroc_ci"])} | ' + (
          f'{_fmt(r["auprc"], r["auprc_ci"])} |'
        )
        if view == 'pooled':
          cells += f' {r["f1_at_val_threshold"]:.3f} | {r["mcc_at_val_threshold"]:.3f} |'
        lines.append(cells)
  return lines


def _differences(results, ci_words, unit):
  """The paired differences with every interval and p-value."""
  lines = []
  lines += ['', '## Paired differences', '']
  lines += [
    f'AUROC intervals: {ci_words}. Beside it: the percentile interval of the joint '
    f'bootstrap (seeds and {unit} resampled; too narrow at few seeds), the test-only '
    'interval (seeds fixed and averaged), p and Holm-adjusted p.',
    '',
    '| row | view | difference | AUROC [95 % CI] | bootstrap percentile | test only | p | '
    'p (Holm) | AUPRC [95 % CI] |',
    '|---|---|---|---|---|---|---|---|---|',
  ]

  def _ci(ci):
    return f'[{ci[0]:+.3f}, {ci[1]:+.3f}]' if ci else ''

  for name, row in results.items():
    for view, v in row['views'].items():
      for k, d in v['differences'].items():
        p, ph = d.get('p', float('nan')), d.get('p_holm', float('nan'))
        lines.append(
          f'| {name} | {view} | {k} | {_diff_line(d)} | {_ci(d.get("auroc_ci_bootstrap"))} | '
          f'{_ci(d["auroc_ci_proteins_only"])} | {p:.3g} | {ph:.3g} | {_diff_line(d, "auprc")} |'
        )
  return lines


def _calibration(results):
  """Expected calibration error per channel and arm."""
  lines = []
  cal_rows = [(n, r['calibration']) for n, r in results.items() if r.get('calibration')]
  if cal_rows:
    lines += ['', '## Calibration (test, candidate residues)', '']
    lines += [
      'Expected calibration error (15 bins), raw and with the Platt map each model stores '
      '(fitted on validation at the end of training; `ptmjax predict --calibrated`). '
      'Mean over seeds.',
      '',
      '| channel | arm | ECE raw | ECE calibrated |',
      '|---|---|---|---|',
    ]
    for name, cal in cal_rows:
      for arm, c in cal.items():
        if arm in MODELS:
          after = f'{c["ece_calibrated"]:.4f}' if 'ece_calibrated' in c else 'n/a'
          lines.append(f'| {name} | {ARM_LABELS[arm]} | {c["ece"]:.4f} | {after} |')
  return lines


def _transfer(curve):
  """The transfer curve table."""
  lines = []
  if curve:
    lines += ['', '## Transfer curve: test AUROC against the share of YAAM training proteins', '']
    lines += [
      'Nested subsets of whole homology clusters; each arm with its chosen recipe; '
      "intervals over the curve's seeds and test proteins.",
      '',
      '| channel | YAAM train share | single-stage | two-stage | two - single | seeds |',
      '|---|---|---|---|---|---|',
    ]
    for name, by_fraction in curve.items():
      for fraction, r in by_fraction.items():
        d = r['two-single']
        lines.append(
          f'| {name} | {float(fraction):.0%} | {_fmt(r["single"]["auroc"], r["single"]["ci"])} | '
          f'{_fmt(r["two"]["auroc"], r["two"]["ci"])} | {_diff_line(d)} | {len(r["seeds"])} |'
        )
  return lines


def _runs(info):
  """Where each run stopped, and whether it reached its cap."""
  lines = []
  if info.get('runs'):
    runs = info['runs']
    capped = [k for k, r in runs.items() if r.get('hit_cap')]
    lines += ['', '## Runs (stopping steps)', '']
    lines += [f'{len(capped)} of {len(runs)} runs reached their step cap'
              + (f' ({", ".join(capped)}): not a plateau.' if capped else '; patience ended the rest.'),
              '', '| run | final model from step | last step | cap | reached cap | '
              'stopped by patience | training s |', '|---|---|---|---|---|---|---|']  # fmt: skip
    for key, r in runs.items():
      lines.append(
        f'| {key} | {r["step"]} | {r["last_step"]} | {r.get("cap", "")} | '
        f'{"yes" if r.get("hit_cap") else "no"} | {"yes" if r["stopped_early"] else "no"} | '
        f'{r["seconds"]:.0f} |'
      )
  return lines


def _probes(config, probes):
  """The frozen-representation probe table."""
  lines = []
  if probes:
    names = sorted({p for kinds in probes.values() for p in kinds},
                   key=lambda p: (p == 'serine', p))  # fmt: skip
    lines += ['', '## Frozen-representation probes (test AUROC)', '']
    lines += [
      'A linear probe (standardised logistic regression, balanced classes) on the frozen '
      "encoder's hidden states of candidate residues, fitted on the first "
      f'{config.report.pca_proteins} validation proteins and scored on the first '
      f'{config.report.pca_proteins} test proteins: does a stage leave the encoder knowing '
      'more about a channel? Mean over seeds (seed SD); `serine` is serines alone.',
      '',
      '| encoder after | ' + ' | '.join(names) + ' | seeds |',
      '|---|' + '---|' * (len(names) + 1),
    ]
    for kind, row in probes.items():
      cells = []
      for p in names:
        c = row.get(p)
        cells.append(f'{c["mean"]:.3f} ({c["sd"]:.3f})' if c else '')
      n = max(len(c['per_seed']) for c in row.values())
      lines.append(f'| {PROBE_LABELS.get(kind, kind)} | ' + ' | '.join(cells) + f' | {n} |')
  return lines


def _serine(separation):
  """The blog's serine-embedding probe."""
  lines = []
  if separation:
    lines += ['', '## Serine embeddings', '']
    lines += ['Linear-probe AUROC (logistic regression fitted on validation serines, scored on']
    lines += ['test serines) separating phosphorylated from unmodified serines:', '']
    for name, r in separation.items():
      lines.append(f'- {name}: {r["probe_auroc"]:.3f} ({r["serines"]} test serines)')
  return lines
