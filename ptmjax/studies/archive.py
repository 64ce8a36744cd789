"""A study's finished seeds as files that travel with the repository, without weights.

A study on 2 CPU cores runs for hours, in several sittings, on machines whose disks do
not outlive a sitting. After each seed, `export_seed` copies what the report reads from
every run of that seed into the archive (`compare.archive_dir`, e.g. under `results/`,
to be committed): each run's `config.json`, `run_info.json`, `metrics.jsonl`,
`timing.json`, `thresholds.json` and model description (`final/ptmjax_model.json`, with
its parameter digest), the run's validation/test scores at its candidate residues, and
its frozen-representation probes. `restore` writes them back into a work dir: the study
then finds those runs finished (their settings are checked against the study's, as for
any finished run: `trainer.check_identity`) and their scores cached (`score_models`), and
computes the report from them exactly as from the live runs.

Weights are not archived (megabytes per run), but for one model: what every seed
trains from, stage 0 (`export_init`, ARCHIVE/stage0 with its weights, 4 MB at the small
ProteinBERT size). A later sitting restores it (`restore_init`) instead of training it
again: XLA compiles for the CPU it runs on, so stage 0 retrained on another machine kind
comes out with other rounding and another parameter digest (2026-12-05: fc7ac27b on the
machine that trained seeds 0-3, 0c29a07b on an AMD EPYC Zen 4, same data, code and
JAX). Archived seeds must have started from the study's initial weights or from one
listed in `accept_inits`; otherwise `restore` refuses, naming both digests.
Scores are stored as float16: `compare.score_models` rounds every live score the same
way, so a report from archived seeds equals one from live runs to the digit.
"""

from __future__ import annotations

import json
import logging
import pathlib
import shutil

import numpy as np

from ptmjax import paths
from ptmjax.data.candidates import Candidates
from ptmjax.errors import UsageError
from ptmjax.run_dir import MODEL_FILE, RunDir
from ptmjax.studies import runs

log = logging.getLogger(__name__)

FORMAT = 'ptmjax-study-archive/1'
MANIFEST = 'seed.json'
INIT_DIR = 'stage0'  # in the archive: the study's initial weights, as its run folder
COMMON = 'common.json'
SCORES_DIR = 'scores'  # in the work dir: compare.score_models' cache
PROBES_DIR = 'representations'  # in the work dir: compare.representations' cache


def round_scores(scores: np.ndarray) -> np.ndarray:
  """Scores as the archive keeps them (float16 values, held as float32)."""
  return np.asarray(scores, np.float16).astype(np.float32)


def score_mask(flat, candidates, channels) -> np.ndarray:
  """[N, 16] the entries a study reads: the candidate residues of `channels` (every
  other entry of a score array is never looked at: `report.channel_targets` and
  `report.any_targets` read candidates only)."""
  from ptmjax.data import ptm_types

  mask = Candidates.from_config(candidates).mask(flat.residues, flat.positions).copy()
  cols = np.zeros(mask.shape[1], bool)
  cols[[ptm_types.INDEX[c] for c in channels]] = True
  mask[:, ~cols] = False
  return mask


def compact(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
  return np.asarray(scores, np.float16)[mask]


def expand(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
  if len(values) != int(mask.sum()):
    raise UsageError(
      f'archived scores hold {len(values)} values where this data has {int(mask.sum())} '
      'candidate entries: the dataset differs from the one the seed was scored on'
    )
  out = np.zeros(mask.shape, np.float32)
  out[mask] = values.astype(np.float32)
  return out


def _run_dirs(workdir: pathlib.Path, seed: int, transfer: bool) -> list[pathlib.Path]:
  """Every training run of `seed` below WORKDIR/seedK, and with `transfer` its transfer
  runs. Without it, transfer runs of seedK are left out: an earlier sitting with other
  `transfer.seeds` may have started some, and this study does not use them."""
  roots = [workdir / f'seed{seed}']
  if transfer:
    roots += sorted(workdir.glob(f'transfer/*/seed{seed}'))
  return sorted({f.parent for root in roots if root.exists() for f in root.rglob(RunDir.CONFIG)})


def export_seed(
  archive: pathlib.Path, workdir: pathlib.Path, seed: int, *, init_sha256: str,
  score_files: dict, probe_files: list, flats: dict, data_digests: dict, channels,
  transfer: bool = True,
) -> pathlib.Path:  # fmt: skip
  """Copies seed `seed`'s runs (every one finished) into ARCHIVE/seedK, replacing an
  earlier export of it; returns the seed's folder.

  Args:
    init_sha256: the parameter digest of the weights every run of the seed started from.
    score_files: {run dir: {split: cache file}} of the seed's scored runs.
    probe_files: representation cache files of the seed's models.
    flats / data_digests: {split: report.Flat / data digest} the scores are of.
    channels: the channels whose candidate scores are kept.
    transfer: whether the seed's transfer-curve runs are part of the study.
  """
  if not runs.is_primary():
    return archive / f'seed{seed}'
  workdir, archive = paths.as_path(workdir), paths.as_path(archive)
  target = archive / f'seed{seed}'
  tmp = archive / f'seed{seed}.tmp'
  if tmp.exists():
    shutil.rmtree(tmp)
  listed = []
  if not transfer and list(workdir.glob(f'transfer/*/seed{seed}')):
    log.info('seed %d: its transfer runs are not in transfer.seeds and are not archived', seed)
  for run in _run_dirs(workdir, seed, transfer):
    if not runs.is_finished(run):
      raise UsageError(f'{run} is not finished: seed {seed} cannot be archived yet')
    rel = run.relative_to(workdir)
    out = tmp / 'runs' / rel
    src, dst = RunDir(run), RunDir(out)
    dst.final.mkdir(parents=True)
    _copy_records(run, out)
    shutil.copy2(src.final / MODEL_FILE, dst.final / MODEL_FILE)
    entry = {'run': str(rel), 'scores': {}}
    candidates = src.read_run_info()['candidates']
    for split, cache in score_files.get(run, {}).items():
      mask = score_mask(flats[split], candidates, channels)
      values = compact(runs.load_array(cache), mask)
      np.savez_compressed(out / f'scores_{split}.npz', values=values)
      entry['scores'][split] = {'cache': cache.name, 'data_sha256': data_digests[split]}
    listed.append(entry)
  (tmp / 'representations').mkdir(parents=True)
  for f in probe_files:
    shutil.copy2(f, tmp / 'representations' / f.name)
  manifest = {
    'format': FORMAT,
    'seed': seed,
    'init_sha256': init_sha256,
    'channels': list(channels),
    'runs': listed,
    'git': runs.git_revision(),
  }
  (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n')
  _replace(target, tmp)
  log.info('seed %d archived: %d runs -> %s', seed, len(listed), target)
  return target


def _copy_records(run, out) -> None:
  """A run's record files (not its weights or checkpoints) into OUT."""
  for name in RunDir.RECORD_FILES:
    if (run / name).exists():
      shutil.copy2(run / name, out / name)


def _replace(target, tmp) -> None:
  """TMP, written whole, takes TARGET's place (an interrupted export leaves the old one)."""
  if target.exists():
    shutil.rmtree(target)
  tmp.rename(target)


def archived_seeds(archive) -> list[int]:
  return sorted(seed_inits(archive))


def seed_inits(archive) -> dict[int, str]:
  """{seed: parameter digest of the initial weights it trained from} of archived seeds."""
  archive = paths.as_path(archive)
  if not archive.exists():
    return {}
  manifests = [json.loads(f.read_text()) for f in archive.glob(f'seed*/{MANIFEST}') if f.is_file()]
  return {m['seed']: m['init_sha256'] for m in manifests}


def _accepted(digest: str, init_sha256: str, accept_inits) -> bool:
  return digest == init_sha256 or any(len(p) >= 16 and digest.startswith(p) for p in accept_inits)


def restore(
  archive, workdir, *, init_sha256: str, flats: dict, data_digests: dict, accept_inits=()
) -> list[int]:
  """Writes every archived seed that the work dir lacks back into it (runs, scores,
  probes); returns the seeds restored. A run already in the work dir is left as it is.

  Args:
    accept_inits: digest prefixes (16 hex digits or more) of other initial weights whose
      seeds are taken as they are: the same stage 0 trained on another machine kind
      (other rounding). Each seed's arms still share one initialisation, so the paired
      differences stay paired; the report names each seed's initial weights.

  Raises UsageError when an archived seed started from initial weights neither the
  study's nor accepted, or was scored on other data (its runs cannot be re-scored
  without weights)."""
  archive, workdir = paths.as_path(archive), paths.as_path(workdir)
  restored = []
  for seed in archived_seeds(archive):
    folder = archive / f'seed{seed}'
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get('format') != FORMAT:
      raise UsageError(f'{folder / MANIFEST}: not a {FORMAT} manifest')
    if not _accepted(manifest['init_sha256'], init_sha256, accept_inits):
      raise UsageError(
        f'{folder}: seed {seed} was trained from initial weights {manifest["init_sha256"][:16]}, '
        f'this study starts from {init_sha256[:16]} (stage 0 trained differently: other '
        'settings, data, JAX version or machine kind); use the initial weights it was '
        'trained from (--config.init_path), accept them (--config.archive_accept_inits='
        f'{manifest["init_sha256"][:16]}) or move the archive aside'
      )
    wrote = 0
    for entry in manifest['runs']:
      src, dst = folder / 'runs' / entry['run'], workdir / entry['run']
      if runs.is_finished(dst):
        continue
      if dst.exists():  # a partial retraining of this run in the work dir: the archive wins
        shutil.rmtree(dst)
      _restore_run(src, dst, ignore=shutil.ignore_patterns('scores_*.npz'))
      candidates = RunDir(src).read_run_info()['candidates']
      for split, s in entry['scores'].items():
        if s['data_sha256'] != data_digests[split]:
          raise UsageError(
            f'{folder}: seed {seed} was scored on other {split} data (data digest '
            f'{s["data_sha256"][:16]}, now {data_digests[split][:16]}); rebuild the '
            'dataset it was built from, or move the archive aside'
          )
        mask = score_mask(flats[split], candidates, manifest['channels'])
        values = np.load(src / f'scores_{split}.npz')['values']
        runs.save_array(workdir / SCORES_DIR / s['cache'], expand(values, mask))
      wrote += 1
    for f in sorted((folder / 'representations').glob('*.json')):
      (workdir / PROBES_DIR).mkdir(parents=True, exist_ok=True)
      if not (workdir / PROBES_DIR / f.name).exists():
        shutil.copy2(f, workdir / PROBES_DIR / f.name)
    if wrote:
      restored.append(seed)
      log.info('seed %d restored from %s: %d runs (no weights)', seed, folder, wrote)
  return restored


def write_common(archive, name: str, data: dict) -> None:
  """One study-wide file in the archive (e.g. the stage-1 baseline), merged by key."""
  path = paths.as_path(archive) / COMMON
  current = json.loads(path.read_text()) if path.exists() else {}
  current[name] = data
  runs.write_text(path, json.dumps(current, indent=2, sort_keys=True) + '\n')


def read_common(archive, name: str):
  path = paths.as_path(archive) / COMMON
  return json.loads(path.read_text()).get(name) if path.exists() else None


def export_init(archive, run) -> None:
  """Copies the study's stage-0 run folder, its weights included, to ARCHIVE/stage0 (once:
  a later sitting restores it rather than training it again)."""
  if not runs.is_primary():
    return
  archive, run = paths.as_path(archive), paths.as_path(run)
  target = archive / INIT_DIR
  if RunDir(target).is_finished():
    return
  tmp = archive / f'{INIT_DIR}.tmp'
  if tmp.exists():
    shutil.rmtree(tmp)
  tmp.mkdir(parents=True)
  _copy_records(run, tmp)
  shutil.copytree(RunDir(run).final, RunDir(tmp).final)
  _replace(target, tmp)
  log.info('stage 0 archived with its weights -> %s', target)


def restore_init(archive, run) -> bool:
  """Writes ARCHIVE/stage0 into the work dir's stage-0 folder when that holds no finished
  run; returns whether it did. An unfinished stage 0 in the work dir is replaced."""
  archive, run = paths.as_path(archive), paths.as_path(run)
  source = archive / INIT_DIR
  if not RunDir(source).is_finished() or RunDir(run).is_finished():
    return False
  if run.exists():
    shutil.rmtree(run)
  _restore_run(source, run)
  log.info('stage 0 restored from %s (not trained again)', source)
  return True


def _restore_run(src, dst, ignore=None) -> None:
  """Copies an archived run into the work dir, marked as trained elsewhere (its seconds
  are the study's training, not this work dir's wall time: `runs.total_seconds`)."""
  shutil.copytree(src, dst, ignore=ignore)
  (dst / RunDir.RESTORED).write_text(f'{src}\n')
