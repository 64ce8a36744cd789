r"""Does fine-tuning on multi-organism PTM data first make a better yeast PTM predictor?

    ptmjax compare --config experiments/configs/compare.py:small --workdir runs/compare \
      --config.data_dir=tfds_data
    python experiments/compare_stages.py --config experiments/configs/compare.py:small ...

Trains every stage of experiments/configs/compare.py (each a resumable `ptmjax
train` work dir, skipped when finished), scores every arm and baseline on the
same YAAM split, and writes WORKDIR/report/{report.md, results.json, *.png}.
"""

from __future__ import annotations

import json
import logging
import pathlib
import subprocess
import sys
import time

import ml_collections
import numpy as np

from ptmjax import checkpoint as ckpt
from ptmjax import inference
from ptmjax.data import pipeline, ptm_types
from ptmjax.data import tokenizer as tok
from ptmjax.evaluation import baselines, bootstrap, metrics, report
from ptmjax.models import ModelConfig, create_model
from ptmjax.training import trainer

log = logging.getLogger('compare')
ARM_LABELS = {
  'identity': 'residue identity',
  'logreg': 'logistic regression, one-hot +/-15',
  'single': 'single-stage (YAAM only)',
  'two': 'two-stage (ptmDB, then YAAM)',
  'count': 'count pre-task, then YAAM',
}


def seeds_of(config) -> list[int]:
  return [int(x) for x in str(config.seeds).split(',') if x.strip()]


# --- training the stages -----------------------------------------------------------------
def _stage_config(stage, *, seed, data_dir, init):
  c = ml_collections.ConfigDict(stage.to_dict())
  c.seed = seed
  c.data.data_dir = data_dir
  c.init_from.path = str(init) if init else ''
  return c


def _train(stage, workdir: pathlib.Path, name: str, **kw) -> pathlib.Path:
  final = workdir / 'final'
  if (final / ckpt.MODEL_FILE).exists():
    log.info('%s: done already (%s)', name, final)
    return final
  t = time.time()
  log.info('%s: training in %s', name, workdir)
  trainer.train(_stage_config(stage, **kw), workdir)
  seconds = time.time() - t
  log.info('%s: %.0f s', name, seconds)
  # Wall time across resumed invocations: the report sums these.
  timing = workdir.parent / 'timing.json' if name != 'stage0' else workdir / 'timing.json'
  record = json.loads(timing.read_text()) if timing.exists() else {}
  record[name] = record.get(name, 0.0) + seconds
  timing.write_text(json.dumps(record, indent=1))
  return final


def initial_weights(config, workdir: pathlib.Path) -> pathlib.Path:
  """The one initialisation every arm and seed starts from."""
  if config.init_path:
    return pathlib.Path(config.init_path)
  if config.stage0.enabled:
    return _train(
      config.stage0, workdir / 'stage0', 'stage0', seed=0, data_dir=config.data_dir, init=None
    )
  path = workdir / 'init'
  if not (path / ckpt.MODEL_FILE).exists():
    m = dict(config.single.model)
    tokenizer = tok.TOKENIZERS[m.pop('tokenizer', 'esm')]()
    model = create_model(ModelConfig.from_dict(m), seed=0)
    ckpt.save_model(path, model, tokenizer, {'random_init': True, 'seed': 0})
  return path


def train_arms(config, workdir: pathlib.Path) -> tuple[pathlib.Path, dict]:
  """{(arm, seed): (final model folder, run work dir)} plus the stage-1 runs."""
  init = initial_weights(config, workdir)
  runs = {}
  for seed in seeds_of(config):
    d = workdir / f'seed{seed}'
    kw = dict(seed=seed, data_dir=config.data_dir)
    runs['single', seed] = _train(config.single, d / 'single', f'single/{seed}', init=init, **kw)
    s1 = _train(config.stage1, d / 'stage1', f'stage1/{seed}', init=init, **kw)
    runs['stage1', seed] = s1
    runs['two', seed] = _train(config.stage2, d / 'two', f'two/{seed}', init=s1, **kw)
    if config.count_pretask:
      c1 = _train(config.count, d / 'count_pretask', f'count-pretask/{seed}', init=init, **kw)
      stage = ml_collections.ConfigDict(config.single.to_dict())
      stage.init_from.skip = ('ptm_head/.*',)  # keep the encoder and count head
      runs['count', seed] = _train(stage, d / 'count', f'count/{seed}', init=c1, **kw)
  return init, runs


# --- scoring -----------------------------------------------------------------------------
def _examples(config, split):
  data = _stage_config(config.single, seed=0, data_dir=config.data_dir, init=None).data
  return trainer.examples(data, trainer.main_spec(data, split))


def _flat(exs):
  return report.Flat.from_examples(
    [pipeline._text(e['sequence']) for e in exs], [e['labels'] for e in exs]
  )


def score_models(config, workdir, models: dict, splits: dict) -> dict:
  """{(arm, seed, split): [N, 16] probabilities}, cached in WORKDIR/scores."""
  cache = workdir / 'scores'
  cache.mkdir(exist_ok=True)
  out = {}
  for (arm, seed), path in models.items():
    for split, exs in splits.items():
      f = cache / f'{arm}_seed{seed}_{split}.npy'
      if not f.exists():
        model, tokenizer, _ = ckpt.load_model(path)
        _, scores = trainer.predict_flat(model, tokenizer, exs, max_len=config.single.data.max_len)
        np.save(f, scores.astype(np.float32))
      out[arm, seed, split] = np.load(f)
  return out


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


# --- embeddings ---------------------------------------------------------------------------
def serine_separation(models: dict, val_exs, test_exs, max_len) -> dict:
  """Serine embeddings per model: 2-D PCA of test serines and a linear probe's AUROC
  (logistic regression fitted on validation serines, scored on test serines)."""
  from sklearn.decomposition import PCA
  from sklearn.linear_model import LogisticRegression

  phos = ptm_types.INDEX['phosphorylation']

  def serines(model, tokenizer, exs):
    seqs = [pipeline._text(e['sequence']) for e in exs]
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


# --- plots --------------------------------------------------------------------------------
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


# --- the report ---------------------------------------------------------------------------
def _fmt(x, ci=None, signed=False):
  s = f'{x:+.3f}' if signed else f'{x:.3f}'
  if ci is not None:
    s += f' [{ci[0]:+.3f}, {ci[1]:+.3f}]' if signed else f' [{ci[0]:.3f}, {ci[1]:.3f}]'
  return s


def verdict(diff) -> str:
  lo, hi = diff['auroc_ci']
  if lo > 0:
    return 'two-stage is better'
  if hi < 0:
    return 'two-stage is worse'
  return 'no clear difference'


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
    f'- Seeds: {seeds_of(config)}; every arm starts from the same weights ({info["init"]}).',
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


def run(config, workdir, command: str = '') -> pathlib.Path:
  """Trains what is missing, scores everything, writes WORKDIR/report; returns report.md."""
  t0 = time.time()
  git = _git_rev()  # the code that trains, not whatever is checked out when it ends
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'compare_config.json').write_text(config.to_json_best_effort(indent=2))
  # Training time of earlier invocations (resumed runs); this one's is in time.time() - t0.
  earlier_s = _timing_total(workdir)
  init, models = train_arms(config, workdir)

  val, test = _examples(config, 'validation'), _examples(config, config.report.split)
  flat_val, flat_test = _flat(val), _flat(test)
  single_info = json.loads(
    (models['single', seeds_of(config)[0]].parent / 'run_info.json').read_text()
  )
  candidates = single_info['candidates']
  mods = [ptm_types.PTM_NAMES[c] for c in ptm_types.MODIFICATION_CHANNELS]
  channels = [
    c
    for c in config.report.channels
    if report.channel_targets(flat_test, np.zeros((len(flat_test.residues), 16)), candidates, c)[
      1
    ].sum()
    >= config.report.min_test_sites
  ]
  log.info('scoring %d models on %d + %d proteins', len(models), len(val), len(test))
  arm_models = {k: v for k, v in models.items() if k[0] != 'stage1'}
  scores = score_models(config, workdir, arm_models, {'validation': val, 'test': test})
  init_scores = score_models(config, workdir, {('init', 0): init}, {'test': test})[
    'init', 0, 'test'
  ]

  # Baselines, fitted on YAAM train.
  train_flat = _flat(_examples(config, 'train'))
  ident = baselines.ResidueIdentity().fit(train_flat)
  logreg = baselines.WindowLogReg().fit(train_flat, candidates, channels)
  for split, flat in (('validation', flat_val), ('test', flat_test)):
    scores['identity', 0, split] = ident.predict(flat)
    scores['logreg', 0, split] = logreg.predict(flat, candidates)

  results = compare(config, flat_val, flat_test, scores, candidates, channels, mods)
  k = config.report.pca_proteins
  seed0 = seeds_of(config)[0]
  sep_models = {'initial encoder': init, 'after stage 1 (ptmDB)': models['stage1', seed0]}
  sep_models['after stage 2 (two-stage)'] = models['two', seed0]
  sep_models['single-stage'] = models['single', seed0]
  separation = serine_separation(sep_models, val[:k], test[:k], config.single.data.max_len)

  outdir = workdir / 'report'
  outdir.mkdir(exist_ok=True)
  runs = {key: path.parent for key, path in models.items()}
  files = plots(
    outdir, flat_test, scores, candidates, mods, channels, runs, separation, init_scores
  )

  stage1_info = json.loads((models['stage1', seed0].parent / 'run_info.json').read_text())
  info = {
    'git': git,
    'machine': _machine(),
    'init': str(init),
    'test_proteins': len(test),
    'val_proteins': len(val),
    'candidates': candidates,
    'homologs_removed': stage1_info['data'].get('homologs_removed'),
    'homologs_of': stage1_info['data'].get('homologs_of'),
    'target': trainer.main_spec(config.single.data, config.report.split),
    'stage1_proteins_before': sum(stage1_info['data']['sources'].values()),
  }
  wall = time.time() - t0 + earlier_s
  write_report(outdir, config, results, info, files, separation, command, wall)
  payload = {
    'results': results,
    'info': info,
    'wall_s': wall,
    'command': command,
    'serine_probe_auroc': {k: v['probe_auroc'] for k, v in separation.items()},
  }
  (outdir / 'results.json').write_text(json.dumps(payload, indent=2) + '\n')
  return outdir / 'report.md'


def _timing_total(workdir: pathlib.Path) -> float:
  return sum(sum(json.loads(f.read_text()).values()) for f in workdir.rglob('timing.json'))


def _git_rev() -> str:
  try:
    rev = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True,
      cwd=pathlib.Path(__file__).parent,
    ).stdout.strip()  # fmt: skip
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no'], capture_output=True, text=True,
      cwd=pathlib.Path(__file__).parent,
    ).stdout.strip()  # fmt: skip
    return rev + ('+changes' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def _machine() -> str:
  import os
  import platform

  import jax

  return f'{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on {jax.devices()[0].platform}'


def main(argv=None) -> int:
  from ptmjax import cli

  return cli.main(['compare', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
  sys.exit(main())
