r"""Does fine-tuning on multi-organism PTM data first make a better yeast PTM predictor?

    ptmjax compare --config compare:small --workdir runs/compare --config.data_dir=tfds_data
    python -m ptmjax.studies.compare --config compare:small --workdir runs/compare ...

Trains every stage of `ptmjax/configs/compare.py` (each a resumable `ptmjax
train` work dir, skipped when finished; `studies.runs`), scores every arm and
baseline on the same YAAM split (`compare_stats`), and writes
WORKDIR/report/{report.md, results.json, *.png} (`compare_report`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import pathlib
import re
import shutil
import sys
import time

import ml_collections
import numpy as np
from flax import nnx

from ptmjax import checkpoint as ckpt
from ptmjax import paths
from ptmjax.data import ptm_types, sources
from ptmjax.data.candidates import Candidates
from ptmjax.errors import UsageError
from ptmjax.evaluation import baselines, report, scoring
from ptmjax.models import create_model
from ptmjax.run_dir import MODEL_FILE, RunDir
from ptmjax.studies import archive, compare_report, compare_stats, runs

log = logging.getLogger('compare')


def seeds_of(config) -> list[int]:
  return [int(x) for x in str(config.seeds).split(',') if x.strip()]


# --- training the stages -----------------------------------------------------------------
def _stage_config(stage, *, seed, data_dir, init, overrides=None):
  c = ml_collections.ConfigDict(stage.to_dict())
  c.seed = seed
  c.data.data_dir = data_dir
  c.init_from.path = str(init) if init else ''
  for key, value in (overrides or {}).items():
    *path, last = key.split('.')
    node = c
    for part in path:
      node = node[part]
    if last not in node:
      raise ValueError(f'recipe override {key!r}: no such setting')
    node[last] = value
  return c


def _train(stage, workdir: pathlib.Path, name: str, **kw) -> pathlib.Path:
  return runs.train(_stage_config(stage, **kw), workdir, name)


def recipes_of(config) -> dict[str, dict]:
  """{name: overrides} of the stage-2 recipe grid, e.g. `'optim.lr=5e-4;optim.layer_decay=0.7'`
  -> {'optim.lr': 0.0005, 'optim.layer_decay': 0.7}; '' is the stage config as it is."""
  out = {}
  for spec in config.recipes:
    overrides = {}
    for pair in filter(None, (p.strip() for p in spec.split(';'))):
      key, _, value = pair.partition('=')
      try:
        overrides[key.strip()] = ast.literal_eval(value.strip())
      except (ValueError, SyntaxError):
        overrides[key.strip()] = value.strip()
    # A folder name: 'base', or e.g. 'lr0.0005_layer_decay0.7' (punctuation dropped).
    parts = [f'{k.rsplit(".", 1)[-1]}{v}' for k, v in overrides.items()]
    name = '_'.join(re.sub(r'[^A-Za-z0-9._-]', '', p) for p in parts) or 'base'

    out[name] = overrides
  return out


def _arm_dir(root: pathlib.Path, arm: str, recipe: str) -> pathlib.Path:
  return root / (arm if recipe == 'base' else f'{arm}@{recipe}')


def val_metric(model_dir, metric: str) -> float:
  """The validation value of `metric` stored with a model folder (its selected step)."""
  value = ckpt.read_meta(model_dir).get('info', {}).get('metrics', {}).get(metric)
  return float('nan') if value is None else float(value)


def initial_weights(config, workdir: pathlib.Path) -> pathlib.Path:
  """The one initialisation every arm and seed starts from."""
  if config.init_path:
    return paths.as_path(config.init_path, 'init_path')
  if config.stage0.enabled:
    store = config.get('archive_dir', '')
    if store:  # stage 0 of an earlier sitting, bit for bit (see `archive`)
      archive.restore_init(store, workdir / 'stage0')
    init = _train(
      config.stage0, workdir / 'stage0', 'stage0', seed=0, data_dir=config.data_dir, init=None
    )
    if store:
      archive.export_init(store, workdir / 'stage0')
    return init
  path = workdir / 'init'
  if not (path / MODEL_FILE).exists():
    model_cfg, tokenizer = ckpt.model_and_tokenizer(config.single)
    model = create_model(model_cfg, seed=0)
    ckpt.save_model(path, model, tokenizer, {'random_init': True, 'seed': 0})
    runs.sync(f'saved {path}')
  return path


# Each arm: (the stage config it trains with, the stage-1 variant it starts from or None
# for the initial weights). 'two_nolys' is the ablation of issue 25: stage 1 trained
# without the lysine channels, so a lysine loss after it is encoder drift, not a
# conflict of label conventions.
ARMS = {
  'single': ('single', None),
  'two': ('stage2', 'stage1'),
  'two_nolys': ('stage2', 'stage1_nolys'),
  # YAAM and ptmDB in one stage (configs/compare.py `joint`): source data without the
  # sequence of fine-tuning.
  'joint': ('joint', None),
}
ARM_STAGES = {arm: stage for arm, (stage, _) in ARMS.items()}
# The stages whose checkpoints, patience and recipes follow `select_metric`.
SELECTING_STAGES = ('stage1', 'stage2', 'single', 'joint')
LYSINE_CHANNELS = ('ubiquitination', 'acetylation', 'succinylation', 'sumoylation', 'methylation')


def arms_of(config) -> list[str]:
  arms = list(config.get('arms', ('single', 'two')))
  unknown = [a for a in arms if a not in ARMS]
  # Single and two are the study's question (the stage-1 gate and the transfer curve
  # need both); the other arms are added to them.
  if unknown or not {'single', 'two'} <= set(arms):
    raise UsageError(f'arms {arms}: each one of {list(ARMS)}, single and two among them')
  return arms


def stage1_variants(config) -> dict[str, ml_collections.ConfigDict]:
  """{name: stage-1 config} of the stage-1 runs the chosen arms start from."""
  out = {}
  for arm in arms_of(config):
    variant = ARMS[arm][1]
    if variant == 'stage1':
      out[variant] = config.stage1
    elif variant == 'stage1_nolys':
      c = ml_collections.ConfigDict(config.stage1.to_dict())
      kept = [ch for ch in config.report.channels if ch not in LYSINE_CHANNELS]
      c.loss.channels = tuple(kept)
      out[variant] = c
  return out


def _start(arm, init, stage1: dict, seed):
  variant = ARMS[arm][1]
  return init if variant is None else stage1[variant, seed]


def choose_recipes(config, workdir: pathlib.Path, init, stage1: dict, seed) -> tuple[dict, dict]:
  """The stage-2 recipe of each arm on `seed`, chosen on validation from the same grid.

  Every recipe is trained for every arm; each arm keeps the recipe with the best
  validation `checkpoint.best_metric` (test data choose nothing), so every arm gets the
  same tuning effort. With `recipe_per_seed`, every seed chooses on its own runs.

  Returns:
    ({arm: recipe name}, {arm: {recipe: validation value}}).
  """
  recipes = recipes_of(config)
  chosen, grid = {}, {}
  for arm in arms_of(config):
    stage = config[ARM_STAGES[arm]]
    grid[arm] = {}
    for name, overrides in recipes.items():
      path = _train(
        stage,
        _arm_dir(workdir / f'seed{seed}', arm, name),
        f'{arm}/{seed}/{name}',
        seed=seed,
        data_dir=config.data_dir,
        init=_start(arm, init, stage1, seed),
        overrides=overrides,
      )
      grid[arm][name] = val_metric(path, stage.checkpoint.best_metric)
    values = grid[arm]
    chosen[arm] = max(values, key=lambda k: -np.inf if np.isnan(values[k]) else values[k])
    if len(recipes) > 1:
      log.info('%s/%s: recipe %s chosen on validation (%s)', arm, seed, chosen[arm], values)
  return chosen, grid


def train_arms(config, workdir: pathlib.Path, init, finish_seed=None) -> tuple[dict, dict, dict]:
  """Trains every stage from `init`; returns ({(arm, seed): final model folder},
  {(arm, seed, fraction): transfer model folder}, recipe info).

  Seed outermost, and a seed's transfer runs with it: a study stopped part-way leaves
  whole seeds, which a report can use and `finish_seed(seed, models, transfer)` (the
  study archive) can keep. Recipe info: 'chosen' {arm: recipe} of the first seed,
  'per_seed' {seed: {arm: recipe}}, 'grid' {seed: {arm: {recipe: value}}}."""
  models, transfer = {}, {}
  recipes = recipes_of(config)
  kw = dict(data_dir=config.data_dir)
  seeds = seeds_of(config)
  transfer_seeds = [int(x) for x in str(config.transfer.seeds).split(',') if x.strip()]
  stage1, per_seed, grid = {}, {}, {}
  for seed in seeds:
    for variant, stage in stage1_variants(config).items():
      stage1[variant, seed] = _train(
        stage, workdir / f'seed{seed}' / variant, f'{variant}/{seed}', seed=seed, init=init, **kw
      )
      models[variant, seed] = stage1[variant, seed]
    if config.get('recipe_per_seed', False) or seed == seeds[0]:
      per_seed[seed], grid[seed] = choose_recipes(config, workdir, init, stage1, seed)
    else:  # the first seed's choice for every seed
      per_seed[seed] = per_seed[seeds[0]]
    d = workdir / f'seed{seed}'
    for arm in arms_of(config):
      models[arm, seed] = _train(
        config[ARM_STAGES[arm]],
        _arm_dir(d, arm, per_seed[seed][arm]),
        f'{arm}/{seed}',
        seed=seed,
        init=_start(arm, init, stage1, seed),
        overrides=recipes[per_seed[seed][arm]],
        **kw,
      )
    if config.count_pretask:
      c1 = _train(
        config.count, d / 'count_pretask', f'count-pretask/{seed}', seed=seed, init=init, **kw
      )
      stage = ml_collections.ConfigDict(config.single.to_dict())
      stage.init_from.skip = ('ptm_head/.*',)  # keep the encoder and count head
      models['count', seed] = _train(stage, d / 'count', f'count/{seed}', seed=seed, init=c1, **kw)
    seed_transfer = {}
    if config.transfer.fractions and seed in transfer_seeds:
      seed_transfer = train_transfer(config, workdir, init, models, per_seed[seed], seed)
      transfer.update(seed_transfer)
    if finish_seed is not None:
      finish_seed(seed, {k: v for k, v in models.items() if k[1] == seed}, seed_transfer)
  info = {'chosen': per_seed[seeds[0]], 'per_seed': per_seed, 'grid': grid, 'recipes': recipes}
  return models, transfer, info


def train_transfer(config, workdir: pathlib.Path, init, models: dict, chosen: dict, seed) -> dict:
  """The transfer curve's runs of `seed`: both arms on nested subsets of YAAM training
  proteins (whole homology clusters; `data.train_fraction`), each arm with the recipe it
  chose on this seed. Returns {(arm, seed, fraction): model folder}; fraction 1.0 is the
  main runs."""
  recipes = recipes_of(config)
  out = {}
  for fraction in config.transfer.fractions:
    for arm, stage_name in (('single', 'single'), ('two', 'stage2')):
      out[arm, seed, fraction] = _train(
        config[stage_name],
        workdir / 'transfer' / f'fraction{fraction:g}' / f'seed{seed}' / arm,
        f'transfer/{fraction:g}/{arm}/{seed}',
        seed=seed,
        data_dir=config.data_dir,
        init=models['stage1', seed] if arm == 'two' else init,
        overrides={**recipes[chosen[arm]], 'data.train_fraction': float(fraction)},
      )
  for arm in ('single', 'two'):
    out[arm, seed, 1.0] = models[arm, seed]
  return out


# --- scoring -----------------------------------------------------------------------------
def _examples(config, split):
  data = _stage_config(config.single, seed=0, data_dir=config.data_dir, init=None).data
  return sources.examples(data, sources.main_spec(data, split))


def _flat(exs):
  return report.Flat.from_examples([e['sequence'] for e in exs], [e['labels'] for e in exs])


def data_digest(examples) -> str:
  """sha256 of the proteins' ids, sequences and labels: a cache key for scores."""
  h = hashlib.sha256()
  for ex in examples:
    h.update(sources.text(ex['id']).encode() + b'\0' + sources.text(ex['sequence']).encode())
    h.update(np.ascontiguousarray(ex['labels'], np.int8).tobytes())
  return h.hexdigest()


def model_digest(path) -> str:
  """The model folder's parameter digest (written at save), or one computed now."""
  meta = ckpt.read_meta(path)
  if meta.get('params_sha256'):
    return meta['params_sha256']
  model, _, _ = ckpt.load_model(path)
  return ckpt.params_digest(nnx.state(model, nnx.Param).to_pure_dict())


def score_models(config, workdir, models: dict, splits: dict, files: dict | None = None) -> dict:
  """{(arm, seed, split): [N, 16] probabilities}, cached in WORKDIR/scores under the
  model's parameter digest and the split's data digest: a retrained model or rebuilt
  data is scored again, never served an old file. Scores are rounded to float16 values
  (`archive.round_scores`), as the study archive keeps them. `files`, when given, gets
  {model folder: {split: cache file}}."""
  cache = paths.as_path(workdir) / archive.SCORES_DIR
  cache.mkdir(exist_ok=True, parents=True)
  digests = {split: data_digest(exs)[:16] for split, exs in splits.items()}
  out = {}
  for key, path in models.items():
    tag = '_'.join(str(k) for k in key)
    weights = model_digest(path)[:16]
    for split, exs in splits.items():
      f = cache / f'{tag}_{split}_{weights}_{digests[split]}.npy'
      if files is not None:
        files.setdefault(path.parent, {})[split] = f
      if f.exists():
        out[(*key, split)] = runs.load_array(f)
        continue
      # Every process scores (model loads are collective); process 0 writes the file.
      model, tokenizer, _ = ckpt.load_model(path)
      _, scores = scoring.predict_flat(model, tokenizer, exs, max_len=config.single.data.max_len)
      out[(*key, split)] = archive.round_scores(scores)
      runs.save_array(f, out[(*key, split)])
  return out


def representations(config, workdir, models: dict, val, test, candidates, channels,
                    files: list | None = None) -> dict:  # fmt: skip
  """{name: compare_stats.representation(...)} of each model folder in `models`, on the
  first `report.pca_proteins` validation and test proteins; cached in
  WORKDIR/representations under the model and data digests (the archive keeps them)."""
  k = config.report.pca_proteins
  cache = paths.as_path(workdir) / archive.PROBES_DIR
  cache.mkdir(exist_ok=True, parents=True)
  data = data_digest([*val[:k], *test[:k]])[:16]
  out = {}
  for name, path in models.items():
    f = cache / f'{model_digest(path)[:16]}_{data}_{k}.json'
    if files is not None:
      files.append(f)
    if f.exists():
      out[name] = json.loads(f.read_text())
      continue
    out[name] = compare_stats.representation(
      path, val[:k], test[:k], config.single.data.max_len, candidates, channels
    )
    runs.write_text(f, json.dumps(out[name]) + '\n')
  return out


PROBED = ('stage1', 'stage1_nolys', 'single', 'two', 'two_nolys', 'joint')


def stage1_check(config, workdir: pathlib.Path, stage1: dict) -> dict:
  """Stage 1 against its own baseline: the window regression fitted on ptmDB training
  proteins (the same filtered set stage 1 trains on), scored on the stage-1 validation
  proteins stage 1 was evaluated on. Stage 1 that does not beat it has learned less
  than a motif model, and transfer from it means little. Cached in WORKDIR."""
  metric = config.stage1.checkpoint.best_metric
  _, channel, stat = metric.split('/')
  path = workdir / 'stage1_baseline.json'
  base = json.loads(path.read_text()) if path.exists() else {}
  if base.get('metric') != metric:  # computed for another selection metric: again
    data = _stage_config(config.stage1, seed=0, data_dir=config.data_dir, init=None).data
    train, _ = sources.training_examples(data)
    info = RunDir.of_model(next(iter(stage1.values()))).read_run_info()
    cand = Candidates.from_json(info['candidates'])
    val = sources.examples(data, sources.main_spec(data, data.eval_split))
    n = config.stage1.eval.max_proteins or len(val)
    flat_val = _flat(val[:n])
    # The channels stage 1 trained and evaluated ('mean' is their mean, as in training).
    fit_on = info['channels'] if channel == report.MEAN else [channel]
    model = baselines.WindowLogReg().fit(_flat(train), cand, fit_on)
    out, _ = report.channel_report(flat_val, model.predict(flat_val, cand), cand, fit_on)
    base = {'metric': metric, 'window_logreg': out[f'val/{channel}/{stat}'], 'proteins': n}
    runs.write_text(path, json.dumps(base, indent=2) + '\n')
  per_seed = {int(seed): val_metric(p, metric) for seed, p in stage1.items()}
  beats = all(v > base['window_logreg'] for v in per_seed.values())
  out = {**base, 'stage1': per_seed, 'beats_baseline': beats}
  if not beats:
    msg = (
      f'stage 1 {metric} {per_seed} does not beat the ptmDB window regression '
      f'({base["window_logreg"]:.3f}) on every seed'
    )
    if config.stage1_gate == 'stop':
      raise UsageError(msg + '; train stage 1 longer (stage1.optim.total_steps) and re-run')
    log.warning('%s; the report says so', msg)
  return out


def trained_mods(config) -> list[str]:
  """'Any PTM' is over the modification channels the arms are trained on (`loss.channels`;
  all of them when unset): a head never trained on a channel outputs noise there, and
  the any-PTM row once compared models trained on 4 channels with a regression fitted
  on all 13. The baselines are fitted on the same channels."""
  trained = set(config.single.loss.get('channels', ()) or ())
  return [
    ptm_types.PTM_NAMES[c]
    for c in ptm_types.MODIFICATION_CHANNELS
    if not trained or ptm_types.PTM_NAMES[c] in trained
  ]


def prepare(config, workdir) -> pathlib.Path:
  """Checks the paths, makes the work dir, points every selecting stage at the study's
  selection metric."""
  for value, what in ((workdir, 'work dir'), (config.data_dir, 'data_dir'),
                      (config.init_path, 'init_path')):  # fmt: skip
    paths.require_supported(value, what)
  workdir = paths.as_path(workdir, 'work dir')
  workdir.mkdir(parents=True, exist_ok=True)
  if config.get('select_metric'):
    for name in SELECTING_STAGES:
      config[name].checkpoint.best_metric = config.select_metric
  return workdir


def restore_archive(config, workdir, init, flats, digests) -> None:
  """Finished seeds of earlier sittings, on other machines (`archive_dir`), when set."""
  store = config.get('archive_dir', '')
  if store:
    archive.restore(store, workdir, init_sha256=model_digest(init), flats=flats,
                    data_digests=digests,
                    accept_inits=tuple(config.get('archive_accept_inits', ())))  # fmt: skip


def score_arms(config, workdir, models, init, splits, flats, candidates, channels, mods):
  """(scores of every arm and baseline, the initial model's test scores, each model's
  stored calibration): what the statistics and plots read."""
  arm_models = {k: v for k, v in models.items() if k[0] not in PROBED[:2]}
  scores = score_models(config, workdir, arm_models, splits)
  init_scores = score_models(config, workdir, {('init', 0): init}, {'test': splits['test']})[
    'init', 0, 'test'
  ]
  calibrations = {
    k: ckpt.read_meta(v).get('info', {}).get('calibration') or {} for k, v in arm_models.items()
  }
  scores.update(baseline_scores(config, flats, candidates, channels, mods))
  return scores, init_scores, calibrations


def run_info_extra(config, models, gate, recipe_info, clusters, single_info, mods) -> dict:
  """The report's record of how the arms were trained, selected and resampled."""
  return {
    'stage1_check': gate,
    'recipes': recipe_info,
    'select_metric': config.single.checkpoint.best_metric,
    'resample': 'clusters',
    'test_clusters': len(set(clusters)),
    'arms': arms_of(config),
    'runs': run_summaries(models),
    'loss_channels': single_info.get('channel_weights'),
    'any_channels': mods,
  }


def run(config, workdir, command: str = '') -> pathlib.Path:
  """Trains what is missing, scores everything, writes WORKDIR/report; returns report.md."""
  t0 = time.time()
  # The code that trains, not whatever is checked out when it ends.
  provenance = runs.provenance(command)
  workdir = prepare(config, workdir)
  # Training time of earlier invocations (resumed runs); this one's is in time.time() - t0.
  # Runs restored from the archive were trained elsewhere: counting them made a report
  # regenerated in a work dir that already held them claim their hours as its wall time.
  earlier_s = runs.total_seconds(workdir, trained_here=True)
  init = initial_weights(config, workdir)
  seed_list = seeds_of(config)
  seed0 = seed_list[0]
  val, test = _examples(config, 'validation'), _examples(config, config.report.split)
  flat_val, flat_test = _flat(val), _flat(test)
  splits = {'validation': val, 'test': test}
  flats = {'validation': flat_val, 'test': flat_test}
  digests = {split: data_digest(exs) for split, exs in splits.items()}
  mods = trained_mods(config)
  restore_archive(config, workdir, init, flats, digests)

  finish_seed = seed_archiver(config, workdir, init, splits, flats, digests)
  models, transfer_models, recipe_info = train_arms(config, workdir, init, finish_seed)
  stage1 = {s: models['stage1', s] for s in seed_list}
  gate = stage1_check(config, workdir, stage1) if config.stage1.data.name != 'synthetic' else None
  training_s = runs.total_seconds(workdir)
  # Written once every stage is known to be this config's (a run trained with other
  # settings is refused above), never over a study whose runs it does not describe.
  runs.write_text(workdir / 'compare_config.json', config.to_json_best_effort(indent=2))

  single_info = RunDir.of_model(models['single', seed0]).read_run_info()
  candidates = Candidates.from_json(single_info['candidates'])
  channels = report_channels(config, flat_test, candidates)
  log.info('scoring %d models on %d + %d proteins', len(models), len(val), len(test))
  scores, init_scores, calibrations = score_arms(
    config, workdir, models, init, splits, flats, candidates, channels, mods
  )
  # Test proteins are resampled by homology cluster (the split's MMseqs2 clusters).
  clusters = [sources.text(ex.get('cluster', '')) or sources.text(ex['id']) for ex in test]
  results = compare_stats.compare(
    config, flat_val, flat_test, scores, candidates, channels, mods, calibrations, clusters
  )
  curve = None
  if transfer_models:
    t_scores = transfer_scores(config, workdir, transfer_models, test, scores)
    curve = compare_stats.transfer_curve(config, flat_test, t_scores, candidates, channels, mods)
  probed = {'init': init, **{f'{a}/{s}': p for (a, s), p in models.items() if a in PROBED}}
  reps = representations(config, workdir, probed, val, test, candidates, config.report.channels)
  probes = compare_stats.probe_table(reps)
  separation = serine_separation(reps, seed0)

  outdir = workdir / 'report'
  if not runs.is_primary():  # everything below writes files: process 0's job
    return outdir / 'report.md'
  outdir.mkdir(exist_ok=True)
  run_dirs = {key: path.parent for key, path in models.items()}
  files = compare_report.plots(
    outdir, flat_test, scores, candidates, mods, channels, run_dirs, separation, init_scores,
    calibrations, curve,
  )  # fmt: skip

  stage1_info = RunDir.of_model(models['stage1', seed0]).read_run_info()
  info = study_info(config, provenance, init, val, test, candidates, stage1_info, single_info)
  info.update(run_info_extra(config, models, gate, recipe_info, clusters, single_info, mods))
  wall = time.time() - t0 + earlier_s
  compare_report.write_report(
    outdir, config, results, info, files, separation, command, wall, training_s, curve, probes
  )
  payload = {
    'results': results,
    'transfer_curve': curve,
    'info': info,
    'wall_s': wall,
    'training_s': training_s,
    'command': command,
    'provenance': provenance,
    'serine_probe_auroc': {k: v['probe_auroc'] for k, v in separation.items()},
    'probes': probes,
  }
  runs.write_text(outdir / 'results.json', json.dumps(payload, indent=2) + '\n')
  return outdir / 'report.md'


def seed_inits(config, own: str, seeds) -> dict[str, str]:
  """{seed: digest prefix of the initial weights it trained from}: the study's own (`own`),
  or for an archived seed the one its manifest records (`archive_accept_inits`)."""
  store = config.get('archive_dir', '')
  archived = archive.seed_inits(store) if store else {}
  return {str(s): archived.get(s, own)[:16] for s in seeds}


def seed_archiver(config, workdir, init, splits: dict, flats: dict, digests: dict):
  """`finish_seed(seed, seed_models, seed_transfer)`: scores and probes a finished
  seed's models and exports them to `archive_dir` (nothing without one)."""
  store = config.get('archive_dir', '')
  mods = trained_mods(config)

  def finish_seed(seed, seed_models, seed_transfer):
    if not store:
      return
    info = RunDir.of_model(seed_models['single', seed]).read_run_info()
    files, probes = {}, []
    scored = {k: v for k, v in seed_models.items() if k[0] not in PROBED[:2]}
    score_models(config, workdir, scored, splits, files)
    curve_runs = {k: v for k, v in seed_transfer.items() if k[2] != 1.0}
    score_models(config, workdir, curve_runs, {'test': splits['test']}, files)
    probed = {f'{a}/{s}': p for (a, s), p in seed_models.items() if a in PROBED}
    representations(config, workdir, probed, splits['validation'], splits['test'],
                    info['candidates'], config.report.channels, probes)  # fmt: skip
    # A seed restored from the archive keeps the initial weights its manifest names (an
    # accepted other stage 0, `archive_accept_inits`), not this sitting's.
    init_sha256 = archive.seed_inits(store).get(seed) or model_digest(init)
    archive.export_seed(
      store, workdir, seed, init_sha256=init_sha256, score_files=files,
      probe_files=probes, flats=flats, data_digests=digests,
      channels=sorted({*mods, *config.report.channels}), transfer=bool(seed_transfer),
    )  # fmt: skip

  return finish_seed


def report_channels(config, flat_test, candidates) -> list[str]:
  """The report's channels with at least `report.min_test_sites` test sites."""
  zeros = np.zeros((len(flat_test.residues), 16))
  return [
    c
    for c in config.report.channels
    if report.channel_targets(flat_test, zeros, candidates, c)[1].sum()
    >= config.report.min_test_sites
  ]


def baseline_scores(config, flats: dict, candidates, channels, mods) -> dict:
  """{(baseline, 0, split): scores} of the baselines, fitted on YAAM train (the single
  arm's training proteins): residue identity, composition, window logistic regression,
  window + composition."""
  single = _stage_config(config.single, seed=0, data_dir=config.data_dir, init=None)
  train_flat = _flat(sources.training_examples(single.data)[0])
  fitted = {'identity': baselines.ResidueIdentity().fit(train_flat)}
  for arm, features in (('composition', 'composition'), ('logreg', 'window'),
                        ('window_composition', 'window+composition')):  # fmt: skip
    fit_on = [*channels, *(m for m in mods if m not in channels)]
    fitted[arm] = baselines.WindowLogReg(features=features).fit(train_flat, candidates, fit_on)
  scores = {}
  for split in ('validation', 'test'):
    for arm, model in fitted.items():
      flat = flats[split]
      scores[arm, 0, split] = (
        model.predict(flat) if arm == 'identity' else model.predict(flat, candidates)
      )
  return scores


def transfer_scores(config, workdir, transfer_models: dict, test, scores: dict) -> dict:
  """{(arm, seed, fraction, 'test'): scores} of the transfer curve; fraction 1.0 is the
  main runs, scored already."""
  curve_runs = {k: v for k, v in transfer_models.items() if k[2] != 1.0}
  t_scores = score_models(config, workdir, curve_runs, {'test': test})
  for arm, seed, fraction in transfer_models:
    if fraction == 1.0:
      t_scores[arm, seed, fraction, 'test'] = scores[arm, seed, 'test']
  return t_scores


def serine_separation(reps: dict, seed0: int) -> dict:
  """The serine-embedding PCA and probe of seed 0's encoders, by stage (for the plot)."""
  separation = {}
  for title, name in (('initial encoder', 'init'), ('after stage 1 (ptmDB)', f'stage1/{seed0}'),
                      ('after stage 2 (two-stage)', f'two/{seed0}'),
                      ('single-stage', f'single/{seed0}')):  # fmt: skip
    r = reps.get(name, {})
    if 'serine_pca' in r:
      separation[title] = {
        'pca': np.asarray(r['serine_pca']),
        'y': np.asarray(r['serine_y'], bool),
        'probe_auroc': r['probe']['serine'],
        'serines': len(r['serine_y']),
      }
  return separation


def study_info(config, provenance, init, val, test, candidates, stage1_info, single_info) -> dict:
  """What the report says of the data and its homology filtering."""
  single_data, stage1_data = single_info['data'], stage1_info['data']
  own = model_digest(init)
  return {
    'git': provenance['git'],
    'machine': provenance['machine'],
    'seeds': seeds_of(config),
    'init': str(init),
    'init_sha256': own[:16],
    'seed_inits': seed_inits(config, own, seeds_of(config)),
    'test_proteins': len(test),
    'val_proteins': len(val),
    'candidates': candidates.to_json(),
    'homologs_removed': stage1_data.get('homologs_removed'),
    'homologs_of': stage1_data.get('homologs_of'),
    'homologs_found': stage1_data.get('homologs_found'),
    'taxa_removed': stage1_data.get('taxa_removed'),
    'exclude_taxa': stage1_data.get('exclude_taxa'),
    'yaam_train_homologs_removed': single_data.get('homologs_removed'),
    'yaam_train_proteins': single_data.get('proteins'),
    'target': sources.main_spec(config.single.data, config.report.split),
    'stage1_proteins_before': sum(stage1_data['sources'].values()),
  }


def run_summaries(models: dict) -> dict:
  """Per run: the step its final model is from, the last step trained, whether patience
  stopped it, its step cap and whether it reached it, and its training seconds."""
  out = {}
  for key, path in models.items():
    info = ckpt.read_meta(path).get('info', {})
    cap = RunDir.of_model(path).step_cap()
    last = info.get('last_step', info.get('step'))
    out['/'.join(map(str, key))] = {
      'step': info.get('step'),
      'last_step': last,
      'stopped_early': info.get('stopped_early', False),
      # A run that reached its step cap was still improving or flat: not a plateau.
      'cap': cap,
      'hit_cap': last is not None and last >= cap,
      'seconds': runs.read_timing(path.parent)['seconds'],
    }
  return out


# --- entry points ------------------------------------------------------------------------
def quickstart_config(family: str = 'transformer') -> str:
  """The named config `ptmjax quickstart --family FAMILY` runs."""
  names = {'transformer': 'compare:quickstart', 'proteinbert': 'compare:quickstart-proteinbert'}
  if family not in names:
    raise UsageError(f'--family {family!r}: use one of {", ".join(names)}')
  return names[family]


def quickstart(workdir, overrides=(), family: str = 'transformer') -> pathlib.Path:
  """The whole two-stage pipeline on synthetic data generated in code (`compare:quickstart`,
  or `compare:quickstart-proteinbert`); leaves the two-stage model at WORKDIR/final.
  Returns report.md."""
  from ptmjax import configs

  t = time.time()
  config = configs.load(quickstart_config(family), overrides)
  paths.require_local(workdir, 'quickstart work dir')  # the final model is copied locally
  workdir = pathlib.Path(workdir)
  print(
    'ptmjax quickstart: SYNTHETIC data generated in code (planted motifs, see '
    'ptmjax/data/synthetic.py): stage 1 on a multi-organism-like source, stage 2 on a '
    f'yeast-like target, against single-stage and baselines -> {workdir}'
  )
  flag = {'transformer': []}.get(family, [f'--family {family}'])  # the default needs no flag
  path = run(
    config, workdir, ' '.join(['ptmjax quickstart', f'--workdir {workdir}', *flag, *overrides])
  )
  final = RunDir(workdir).final  # the study's work dir holds one model, as a run's does
  if final.exists():
    shutil.rmtree(final)
  seed = seeds_of(config)[0]
  shutil.copytree(RunDir(workdir / f'seed{seed}' / 'two').final, final)
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
