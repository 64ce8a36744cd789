r"""Does fine-tuning on multi-organism PTM data first make a better yeast PTM predictor?

    ptmjax compare --config compare:small --workdir runs/compare --config.data_dir=tfds_data
    python -m ptmjax.studies.compare --config compare:small --workdir runs/compare ...

Trains every stage of `ptmjax/configs/compare.py` (each a resumable `ptmjax
train` work dir, skipped when finished; `studies.runs`), scores every arm and
baseline on the same YAAM split (`compare_stats`), and writes
WORKDIR/report/{report.md, results.json, *.png} (`compare_report`).
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import sys
import time

import ml_collections
import numpy as np

from ptmjax import checkpoint as ckpt
from ptmjax.data import ptm_types, sources
from ptmjax.data.candidates import Candidates
from ptmjax.evaluation import baselines, report, scoring
from ptmjax.models import create_model
from ptmjax.studies import compare_report, compare_stats, runs

log = logging.getLogger('compare')


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
  return runs.train(_stage_config(stage, **kw), workdir, name)


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
    from ptmjax.training import trainer

    model_cfg, tokenizer = trainer.model_and_tokenizer(config.single)
    model = create_model(model_cfg, seed=0)
    ckpt.save_model(path, model, tokenizer, {'random_init': True, 'seed': 0})
  return path


def train_arms(config, workdir: pathlib.Path) -> tuple[pathlib.Path, dict]:
  """{(arm, seed): (final model folder, run work dir)} plus the stage-1 runs."""
  init = initial_weights(config, workdir)
  models = {}
  for seed in seeds_of(config):
    d = workdir / f'seed{seed}'
    kw = dict(seed=seed, data_dir=config.data_dir)
    models['single', seed] = _train(config.single, d / 'single', f'single/{seed}', init=init, **kw)
    s1 = _train(config.stage1, d / 'stage1', f'stage1/{seed}', init=init, **kw)
    models['stage1', seed] = s1
    models['two', seed] = _train(config.stage2, d / 'two', f'two/{seed}', init=s1, **kw)
    if config.count_pretask:
      c1 = _train(config.count, d / 'count_pretask', f'count-pretask/{seed}', init=init, **kw)
      stage = ml_collections.ConfigDict(config.single.to_dict())
      stage.init_from.skip = ('ptm_head/.*',)  # keep the encoder and count head
      models['count', seed] = _train(stage, d / 'count', f'count/{seed}', init=c1, **kw)
  return init, models


# --- scoring -----------------------------------------------------------------------------
def _examples(config, split):
  data = _stage_config(config.single, seed=0, data_dir=config.data_dir, init=None).data
  return sources.examples(data, sources.main_spec(data, split))


def _flat(exs):
  return report.Flat.from_examples([e['sequence'] for e in exs], [e['labels'] for e in exs])


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
        _, scores = scoring.predict_flat(model, tokenizer, exs, max_len=config.single.data.max_len)
        np.save(f, scores.astype(np.float32))
      out[arm, seed, split] = np.load(f)
  return out


def run(config, workdir, command: str = '') -> pathlib.Path:
  """Trains what is missing, scores everything, writes WORKDIR/report; returns report.md."""
  t0 = time.time()
  # The code that trains, not whatever is checked out when it ends.
  provenance = runs.provenance(command)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'compare_config.json').write_text(config.to_json_best_effort(indent=2))
  # Training time of earlier invocations (resumed runs); this one's is in time.time() - t0.
  earlier_s = runs.total_seconds(workdir)
  init, models = train_arms(config, workdir)

  val, test = _examples(config, 'validation'), _examples(config, config.report.split)
  flat_val, flat_test = _flat(val), _flat(test)
  single_info = json.loads(
    (models['single', seeds_of(config)[0]].parent / 'run_info.json').read_text()
  )
  candidates = Candidates.from_json(single_info['candidates'])
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

  results = compare_stats.compare(config, flat_val, flat_test, scores, candidates, channels, mods)
  k = config.report.pca_proteins
  seed0 = seeds_of(config)[0]
  sep_models = {'initial encoder': init, 'after stage 1 (ptmDB)': models['stage1', seed0]}
  sep_models['after stage 2 (two-stage)'] = models['two', seed0]
  sep_models['single-stage'] = models['single', seed0]
  separation = compare_stats.serine_separation(
    sep_models, val[:k], test[:k], config.single.data.max_len
  )

  outdir = workdir / 'report'
  outdir.mkdir(exist_ok=True)
  run_dirs = {key: path.parent for key, path in models.items()}
  files = compare_report.plots(
    outdir, flat_test, scores, candidates, mods, channels, run_dirs, separation, init_scores
  )

  stage1_info = json.loads((models['stage1', seed0].parent / 'run_info.json').read_text())
  info = {
    'git': provenance['git'],
    'machine': provenance['machine'],
    'seeds': seeds_of(config),
    'init': str(init),
    'test_proteins': len(test),
    'val_proteins': len(val),
    'candidates': candidates.to_json(),
    'homologs_removed': stage1_info['data'].get('homologs_removed'),
    'homologs_of': stage1_info['data'].get('homologs_of'),
    'target': sources.main_spec(config.single.data, config.report.split),
    'stage1_proteins_before': sum(stage1_info['data']['sources'].values()),
  }
  wall = time.time() - t0 + earlier_s
  compare_report.write_report(outdir, config, results, info, files, separation, command, wall)
  payload = {
    'results': results,
    'info': info,
    'wall_s': wall,
    'training_s': runs.total_seconds(workdir),
    'command': command,
    'provenance': provenance,
    'serine_probe_auroc': {k: v['probe_auroc'] for k, v in separation.items()},
  }
  (outdir / 'results.json').write_text(json.dumps(payload, indent=2) + '\n')
  return outdir / 'report.md'


# --- entry points ------------------------------------------------------------------------
def quickstart(workdir, overrides=(), family: str = 'transformer') -> pathlib.Path:
  """The whole two-stage pipeline on synthetic data generated in code (`compare:quickstart`,
  or `compare:quickstart-proteinbert`); leaves the two-stage model at WORKDIR/final.
  Returns report.md."""
  from ptmjax import configs

  t = time.time()
  suffix = '' if family == 'transformer' else f'-{family}'
  config = configs.load(f'compare:quickstart{suffix}', overrides)
  workdir = pathlib.Path(workdir)
  print(
    'ptmjax quickstart: SYNTHETIC data generated in code (planted motifs, see '
    'ptmjax/data/synthetic.py): stage 1 on a multi-organism-like source, stage 2 on a '
    f'yeast-like target, against single-stage and baselines -> {workdir}'
  )
  flag = [f'--family {family}'] if suffix else []
  path = run(
    config, workdir, ' '.join(['ptmjax quickstart', f'--workdir {workdir}', *flag, *overrides])
  )
  final = workdir / 'final'
  if final.exists():
    shutil.rmtree(final)
  seed = seeds_of(config)[0]
  shutil.copytree(workdir / f'seed{seed}' / 'two' / 'final', final)
  print(f'done in {time.time() - t:.0f} s')
  print(f'report:      {path}')
  print(f'final model: {final} (two-stage, seed {seed})')
  print(f'next:        ptmjax predict --checkpoint {final} --fasta YOUR.fasta --out preds.tsv')
  return path


def run_from_args(args, overrides) -> int:
  """`ptmjax compare` and `python -m ptmjax.studies.compare`: --config, --workdir, overrides."""
  from ptmjax import commands

  config, command = commands.study_config('compare', args, overrides)
  print(f'report: {run(config, args.workdir, command)}')
  return 0


def main(argv=None) -> int:
  from ptmjax import commands

  return commands.study_main(
    'python -m ptmjax.studies.compare', run_from_args, __doc__, argv, 'compare:small'
  )


if __name__ == '__main__':
  sys.exit(main())
