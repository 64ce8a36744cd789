"""TFDS builders end to end: build into a temporary folder, read back without TensorFlow."""

import collections
import functools
import gzip
import http.server
import pathlib
import shutil
import sys
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import DUMMY_PTMDB, DUMMY_YAAM

import ptmjax.data.builders  # noqa: F401
from ptmjax.data import homology, ptm_types, sources


def _rows(source):
  return {split: [source[split][i] for i in range(len(source[split]))] for split in source}


def _assert_cluster_disjoint(rows):
  splits_of = collections.defaultdict(set)
  for split in ('train', 'validation', 'test'):
    for ex in rows[split]:
      splits_of[ex['cluster']].add(split)
  assert all(len(s) == 1 for s in splits_of.values())


def test_yaam_dummy_build(tmp_path):
  builder = sources.build('yaam', DUMMY_YAAM, tmp_path / 'data')
  # Readable as any TFDS dataset once the builders are registered.
  source = tfds.builder('yaam', data_dir=str(tmp_path / 'data')).as_data_source()
  rows = _rows(source)
  assert sum(len(rows[s]) for s in ('train', 'validation', 'test')) == 4
  assert [ex['id'] for ex in rows['unlabeled']] == [b'YDR001C']
  ex = next(e for s in rows for e in rows[s] if e['id'] == b'YAL001C')
  assert ex['labels'].dtype == np.int8 and ex['labels'].shape == (60, ptm_types.NUM_TYPES)
  assert ex['labels'][4, ptm_types.INDEX['phosphorylation']] == 1
  assert ex['taxon_id'] == 559292 and ex['source'] == b'yaam'
  meta = builder.info.metadata
  assert meta['ptm_types'] == list(ptm_types.PTM_NAMES)
  assert meta['counts']['rows_residue_mismatch'] == 1
  assert meta['counts']['rows_orf_missing'] == 1


def test_yaam_downloads_proteome_when_absent(tmp_path):
  """No proteome in the manual dir: fetched through the TFDS download manager."""
  manual = tmp_path / 'manual'
  manual.mkdir()
  shutil.copy(DUMMY_YAAM / 'yaam_test.txt', manual / 'yaam_test.txt')
  served = tmp_path / 'served'
  served.mkdir()
  with gzip.open(served / 'orf_trans_all.fasta.gz', 'wb') as f:
    f.write((DUMMY_YAAM / 's288c_proteins.fasta').read_bytes())
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    url = f'http://127.0.0.1:{server.server_address[1]}/orf_trans_all.fasta.gz'
    builder = sources.build('yaam', manual, tmp_path / 'data', proteome_url=url)
  finally:
    server.shutdown()
  assert builder.info.metadata['counts']['proteins_labeled'] == 4
  assert builder.info.metadata['proteome_file'].startswith(str(tmp_path / 'data'))


def test_yaam_without_proteome_and_network_fails_fast(tmp_path):
  """Offline, it used to retry for 207 s and end in a traceback (issue 17)."""
  import socket
  import time

  manual = tmp_path / 'manual'
  manual.mkdir()
  shutil.copy(DUMMY_YAAM / 'yaam_test.txt', manual / 'yaam_test.txt')
  with socket.socket() as s:  # a port nobody listens on
    s.bind(('127.0.0.1', 0))
    url = f'http://127.0.0.1:{s.getsockname()[1]}/orf_trans_all.fasta.gz'
  start = time.perf_counter()
  with pytest.raises(FileNotFoundError, match=r'could not be downloaded .*--proteome-file'):
    sources.build('yaam', manual, tmp_path / 'data', proteome_url=url)
  assert time.perf_counter() - start < 30


def test_yaam_missing_input_lists_what_it_expects(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  # Empty manual dir: TFDS's own check, with our instructions naming each file.
  with pytest.raises(AssertionError, match=r'yaam\*\.txt'):
    sources.build('yaam', manual, tmp_path / 'data')
  (manual / 'notes.txt').write_text('not the export')
  with pytest.raises(FileNotFoundError, match=r"YAAM export: no file under .* \['yaam\*\.txt'"):
    sources.build('yaam', manual, tmp_path / 'data')


def test_ptmdb_dummy_configs(tmp_path):
  builder = sources.build('ptmdb', DUMMY_PTMDB, tmp_path / 'data', 'all')
  rows = _rows(builder.as_data_source())
  ids = sorted(ex['id'] for s in rows for ex in rows[s])
  assert ids == [b'O55555', b'P11111', b'P22222', b'Q33333', b'Q44444']
  meta = builder.info.metadata
  assert meta['counts']['files_unrecognised'] == 1  # the README.txt, reported
  assert meta['counts']['sequence_conflicts'] == 1
  only = sources.build('ptmdb', DUMMY_PTMDB, tmp_path / 'data', 'dbptm')
  rows = _rows(only.as_data_source())
  assert sorted(ex['id'] for s in rows for ex in rows[s]) == [b'O55555', b'P11111']


def test_splits_are_deterministic(tmp_path):
  a = sources.build('ptmdb', DUMMY_PTMDB, tmp_path / 'a', 'annotated_fasta')
  b = sources.build('ptmdb', DUMMY_PTMDB, tmp_path / 'b', 'annotated_fasta')

  def ids_per_split(builder):
    return {
      s: sorted(ex['id'] for ex in rows) for s, rows in _rows(builder.as_data_source()).items()
    }

  split_a = ids_per_split(a)
  assert split_a == ids_per_split(b)
  # Two empty splits would be equal too: every protein is in one split, and train has some.
  assert split_a['train'] and sum(map(len, split_a.values())) == a.info.splits.total_num_examples


@pytest.fixture(scope='module')
def real_builds(real_tfds):
  _, yaam, ptmdb = real_tfds
  return (
    _rows(yaam.as_data_source()),
    yaam.info.metadata,
    _rows(ptmdb.as_data_source()),
    ptmdb.info.metadata,
  )


def test_real_yaam_build(real_builds):
  rows, meta, _, _ = real_builds
  labeled = [ex for s in ('train', 'validation', 'test') for ex in rows[s]]
  assert len(labeled) == 4862
  assert sum(int((ex['labels'] == 1).sum()) for ex in labeled) == 59_394
  assert len(rows['unlabeled']) == 5983 - 4862
  _assert_cluster_disjoint(rows)
  n = {s: len(rows[s]) for s in ('train', 'validation', 'test')}
  assert 0.75 < n['train'] / 4862 < 0.85 and 0.07 < n['test'] / 4862 < 0.13
  assert all(ex['labels'].shape == (len(ex['sequence']), ptm_types.NUM_TYPES) for ex in labeled)
  assert all((ex['labels'][:, ptm_types.INDEX['other']] == -1).all() for ex in labeled)
  assert meta['counts']['rows_residue_mismatch'] == 151
  assert meta['counts']['rows_orf_missing'] == 88
  assert meta['counts']['rows_position_out_of_range'] == 3


def test_real_ptmdb_build(real_builds):
  _, _, rows, meta = real_builds
  every = [ex for s in rows for ex in rows[s]]
  assert len(every) == 9233 == sum(meta['splits'][s]['proteins'] for s in meta['splits'])
  assert sum(len(ex['sequence']) for ex in every) == 5_720_429
  assert sum(b'Saccharomyces cerevisiae' in ex['organism'] for ex in every) == 349
  _assert_cluster_disjoint(rows)
  # An annotated-FASTA-only protein: phosphorylation known on S/T (ST file) or Y,
  # every other type unknown.
  fasta_only = [ex for ex in every if b'uniprot' not in ex['source']]
  assert len(fasta_only) > 7000
  for ex in fasta_only[:200]:
    others = np.delete(ex['labels'], ptm_types.INDEX['phosphorylation'], axis=1)
    assert (others == -1).all()
    phos = ex['labels'][:, ptm_types.INDEX['phosphorylation']]
    seq = np.frombuffer(ex['sequence'], 'S1')
    assert (phos[~np.isin(seq, [b'S', b'T', b'Y'])] == -1).all()


def test_real_homolog_filter(real_builds):
  """YAAM validation+test proteins and their homologs leave ptmDB train."""
  yaam_rows, _, ptmdb_rows, _ = real_builds
  refs = {
    ex['id'].decode(): ex['sequence'].decode()
    for s in ('validation', 'test')
    for ex in yaam_rows[s]
  }
  train = ptmdb_rows['train']
  kept, removed = homology.remove_homologs(train, refs)
  assert len(kept) + len(removed) == len(train)
  assert 100 < len(removed) < 1000, len(removed)
  # Sanity: a yeast test protein that itself sits in ptmDB train is removed.
  yaam_seqs = set(refs.values())
  identical = {ex['id'].decode() for ex in train if ex['sequence'].decode() in yaam_seqs}
  assert identical and identical <= set(removed)
  assert 'tensorflow' not in sys.modules


def test_rebuilding_from_changed_inputs_is_refused_until_forced(tmp_path):
  """It used to print 'built ... in 0.0 s' with the old dataset's counts (issue 17)."""
  from ptmjax import cli
  from ptmjax.data.records import InputError

  manual = tmp_path / 'manual'
  shutil.copytree(DUMMY_YAAM, manual)
  first = sources.build('yaam', manual, tmp_path / 'data')
  again = sources.build('yaam', manual, tmp_path / 'data')  # same inputs: reused
  assert again.info.metadata['counts'] == first.info.metadata['counts']
  export = manual / 'yaam_test.txt'
  lines = export.read_text().splitlines(keepends=True)
  export.write_text(''.join(lines[:-1]))  # one site fewer
  with pytest.raises(InputError, match=r'built from other input files .*yaam_test\.txt.*--force'):
    sources.build('yaam', manual, tmp_path / 'data')
  args = [
    'data',
    'build',
    'yaam',
    '--manual-dir',
    str(manual),
    '--data-dir',
    str(tmp_path / 'data'),
  ]
  assert cli.main(args) == 2
  assert cli.main([*args, '--force']) == 0
  rebuilt = sources.build('yaam', manual, tmp_path / 'data')
  assert rebuilt.info.metadata['counts'] != first.info.metadata['counts']


def test_unrelated_files_in_the_manual_dir_do_not_block_a_rebuild(tmp_path):
  """Issue 28 row 9: a notes.txt beside the inputs made every rebuild an error, and the
  only way past was --force (which deleted the dataset first)."""
  manual = tmp_path / 'manual'
  shutil.copytree(DUMMY_YAAM, manual)
  first = sources.build('yaam', manual, tmp_path / 'data')
  (manual / 'notes.txt').write_text('where these files came from\n')
  (manual / 'old').mkdir()
  (manual / 'old' / 'scratch.tsv').write_text('a\tb\n')
  again = sources.build('yaam', manual, tmp_path / 'data')
  assert again.info.metadata['counts'] == first.info.metadata['counts']
  used, ignored = sources.input_files('yaam', manual)
  assert sorted(p.name for p in used) == ['s288c_proteins.fasta', 'yaam_test.txt']
  assert ignored == 2


def test_force_rebuild_that_fails_keeps_the_working_dataset(tmp_path):
  """Issue 28 row 4: `--force` deleted the dataset before parsing; malformed inputs then
  left none."""
  from ptmjax.data.records import InputError

  manual = tmp_path / 'manual'
  shutil.copytree(DUMMY_YAAM, manual)
  sources.build('yaam', manual, tmp_path / 'data')
  before = _rows(sources.load('yaam', tmp_path / 'data'))
  (manual / 'yaam_test.txt').write_text('Version: 12/15/2021\n')  # no sections: no rows
  with pytest.raises(InputError, match='no usable YAAM rows'):
    sources.build('yaam', manual, tmp_path / 'data', force=True)
  after = _rows(sources.load('yaam', tmp_path / 'data'))
  assert {s: [e['id'] for e in r] for s, r in after.items()} == {
    s: [e['id'] for e in r] for s, r in before.items()
  }
  assert not [p for p in (tmp_path / 'data').iterdir() if p.name.startswith('.rebuild')]


def test_a_truncated_shard_is_one_line_naming_it_and_the_rebuild(tmp_path):
  """Issue 28 row 5: a re-run of `data build` said "built", and training died with a
  40-line `Corrupted Riegeli/records file` naming no file."""
  from ptmjax.data.records import InputError

  builder = sources.build('ptmdb', DUMMY_PTMDB, tmp_path / 'data', config='all')
  shard = sorted(pathlib.Path(builder.data_path).glob('*-train.array_record*'))[0]
  shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
  with pytest.raises(InputError) as e:
    sources.load('ptmdb', tmp_path / 'data', config='all')
  message = str(e.value)
  assert shard.name in message and 'truncated' in message
  assert 'ptmjax data build ptmdb --config all' in message and '--force' in message
