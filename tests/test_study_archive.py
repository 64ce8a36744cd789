"""The study archive: finished seeds without weights, restored on another machine."""

import json
import shutil
import time

import numpy as np
import pytest

from ptmjax import checkpoint as ckpt
from ptmjax import configs
from ptmjax.data.candidates import Candidates
from ptmjax.errors import ModelFolderError, UsageError
from ptmjax.evaluation import report
from ptmjax.studies import archive, compare
from tests.conftest import QUICK


def _config(store, seeds='0'):
  overrides = [o for o in QUICK if not o.startswith('--config.seeds=')]
  return configs.load(
    'compare:quickstart', [*overrides, f'--config.seeds={seeds}', f'--config.archive_dir={store}']
  )


@pytest.fixture(scope='module')
def archived(quickstart_dir):
  """(work dir, archive) of the session's quickstart (QUICK, seed 0, an archive)."""
  return quickstart_dir, quickstart_dir / 'archive'


def test_a_restored_study_trains_nothing_and_reports_the_same_numbers(archived, tmp_path):
  root, store = archived
  second = tmp_path / 'second'  # another machine: only the archive travels
  compare.run(_config(store), second)
  first = json.loads((root / 'report' / 'results.json').read_text())
  again = json.loads((second / 'report' / 'results.json').read_text())
  assert again['results'] == first['results']
  assert again['probes'] == first['probes']
  assert again['info']['runs'] == first['info']['runs']
  # Nothing trained in the second work dir: its runs have no checkpoints, no weights.
  assert not list((second / 'seed0').rglob('checkpoints'))
  assert not list((second / 'seed0').rglob('params'))
  assert archive.archived_seeds(store) == [0]


def test_a_report_regenerated_over_restored_runs_does_not_count_their_training_as_wall_time(
  archived, tmp_path
):
  _, store = archived
  second = tmp_path / 'second'
  compare.run(_config(store), second)
  started = time.time()
  compare.run(_config(store), second)  # the work dir now holds the restored runs
  elapsed = time.time() - started
  again = json.loads((second / 'report' / 'results.json').read_text())
  assert again['training_s'] > 0
  assert again['wall_s'] <= elapsed


def test_the_archive_holds_no_weights(archived):
  _, store = archived
  files = [f for f in store.rglob('*') if f.is_file()]
  assert files and not [f for f in files if 'params' in f.parts or 'checkpoints' in f.parts]
  manifest = json.loads((store / 'seed0' / archive.MANIFEST).read_text())
  runs = {e['run'] for e in manifest['runs']}
  assert {'seed0/stage1', 'seed0/single', 'seed0/two'} <= runs
  assert all(e['scores'] for e in manifest['runs'] if e['run'] in ('seed0/single', 'seed0/two'))


def _archive_with_init(store, tmp_path, digest):
  """A copy of the archive whose seed 0 names other initial weights."""
  copy = tmp_path / 'archive'
  shutil.copytree(store, copy)
  manifest = copy / 'seed0' / archive.MANIFEST
  data = json.loads(manifest.read_text())
  data['init_sha256'] = digest
  manifest.write_text(json.dumps(data))
  return copy


def test_restore_refuses_a_seed_trained_from_other_initial_weights(archived, tmp_path):
  _, store = archived
  copy = _archive_with_init(store, tmp_path, '0' * 64)
  with pytest.raises(UsageError, match='initial weights 0000000000000000'):
    compare.run(_config(copy), tmp_path / 'third')


def test_a_seed_from_accepted_other_initial_weights_is_restored_and_named(archived, tmp_path):
  """Stage 0 retrained on another machine kind rounds differently (issue 25): its seeds
  are taken when their digest is accepted, and the report says which seed came from which."""
  root, store = archived
  config = _config(_archive_with_init(store, tmp_path, 'ab' * 32))
  config.archive_accept_inits = ('ab' * 8,)
  compare.run(config, tmp_path / 'fourth')
  out = json.loads((tmp_path / 'fourth' / 'report' / 'results.json').read_text())
  assert out['info']['seed_inits'] == {'0': 'ab' * 8}
  first = json.loads((root / 'report' / 'results.json').read_text())
  assert out['results'] == first['results']
  text = (tmp_path / 'fourth' / 'report' / 'report.md').read_text()
  assert f'seeds 0: `{"ab" * 8}`' in text
  config.archive_accept_inits = ('ab' * 4,)  # a prefix too short to name weights
  with pytest.raises(UsageError, match='archive_accept_inits=abababab'):
    compare.run(config, tmp_path / 'fifth')


def test_stage0_travels_with_its_weights_and_is_restored_not_retrained(archived, tmp_path):
  root, _ = archived
  run = tmp_path / 'first' / 'stage0'  # a finished stage-0 run folder
  shutil.copytree(root / 'init', run / 'final')
  for name in ('config.json', 'run_info.json', 'metrics.jsonl'):
    (run / name).write_text('{}\n')
  store = tmp_path / 'store'
  archive.export_init(store, run)
  assert (store / archive.INIT_DIR / 'final' / 'params').is_dir()
  again = tmp_path / 'second' / 'stage0'
  (again / 'checkpoints').mkdir(parents=True)  # an unfinished stage 0 of this sitting
  assert archive.restore_init(store, again)
  assert compare.model_digest(again / 'final') == compare.model_digest(root / 'init')
  assert not (again / 'checkpoints').exists()
  assert (again / 'config.json').read_text() == '{}\n'
  assert not archive.restore_init(store, again)  # finished: left as it is
  assert not archive.restore_init(tmp_path / 'empty', tmp_path / 'third' / 'stage0')


def test_a_weightless_model_folder_is_a_clear_error(archived, tmp_path):
  _, store = archived
  folder = store / 'seed0' / 'runs' / 'seed0' / 'single' / 'final'
  with pytest.raises(ModelFolderError, match='without its weights'):
    ckpt.load_model(folder)


def test_compact_scores_keep_every_entry_a_study_reads():
  seqs = ['MSTKYAS', 'KKSTPLY']
  labels = [np.zeros((len(s), 16), np.int8) for s in seqs]
  flat = report.Flat.from_examples(seqs, labels)
  rng = np.random.default_rng(0)
  scores = rng.random((len(flat.residues), 16)).astype(np.float32)
  cand = Candidates.from_json({'phosphorylation': 'STY', 'acetylation': 'K'})
  mask = archive.score_mask(flat, cand, ['phosphorylation', 'acetylation'])
  back = archive.expand(archive.compact(scores, mask), mask)
  rounded = archive.round_scores(scores)
  for channel in ('phosphorylation', 'acetylation'):
    a = report.channel_targets(flat, rounded, cand, channel)
    b = report.channel_targets(flat, back, cand, channel)
    np.testing.assert_array_equal(a[2], b[2])
    assert len(a[2]) > 0
  with pytest.raises(UsageError, match='dataset differs'):
    archive.expand(archive.compact(scores, mask)[:-1], mask)


def test_a_leftover_transfer_run_outside_transfer_seeds_does_not_block_the_seed(archived, tmp_path):
  root, _ = archived
  work = tmp_path / 'work'
  shutil.copytree(root / 'seed0', work / 'seed0', ignore=shutil.ignore_patterns('checkpoints'))
  # An earlier sitting with other transfer.seeds started this run and never finished it.
  leftover = work / 'transfer' / 'fraction0.25' / 'seed0' / 'single'
  leftover.mkdir(parents=True)
  (leftover / 'config.json').write_text('{}')
  kwargs = dict(init_sha256='0' * 64, score_files={}, probe_files=[], flats={},
                data_digests={}, channels=['phosphorylation'])  # fmt: skip
  target = archive.export_seed(tmp_path / 'store', work, 0, transfer=False, **kwargs)
  listed = {e['run'] for e in json.loads((target / archive.MANIFEST).read_text())['runs']}
  assert {'seed0/stage1', 'seed0/single', 'seed0/two'} <= listed
  assert not [r for r in listed if r.startswith('transfer/')]
  # A seed whose transfer runs the study uses still waits for them.
  with pytest.raises(UsageError, match='is not finished: seed 0 cannot be archived yet'):
    archive.export_seed(tmp_path / 'store2', work, 0, transfer=True, **kwargs)
