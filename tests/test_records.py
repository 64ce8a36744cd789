"""FASTA reading: defined normalisations, and clear errors for everything else."""

import gzip

import pytest

from ptmjax.data.records import InputError, Tally, read_fasta


def _write(tmp_path, text, name='x.fasta'):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_normalisations_are_counted(tmp_path):
  path = _write(tmp_path, '>a desc\nmkv\nLST*\n\n>b\nACDX\nUOBZ\n')
  tally = Tally()
  recs = list(read_fasta(path, tally))
  assert [(r.id, r.sequence, r.line) for r in recs] == [('a', 'MKVLST', 1), ('b', 'ACDXUOBZ', 5)]
  assert tally['sequences_lowercase_normalised'] == 1
  assert tally['sequences_trailing_stop_removed'] == 1
  assert tally['fasta_records'] == 2


def test_gzip(tmp_path):
  path = tmp_path / 'x.fasta.gz'
  with gzip.open(path, 'wt') as f:
    f.write('>YAL001C TFC3 SGDID:S000000001, Chr I\nMKV*\n')
  assert [r.sequence for r in read_fasta(path)] == ['MKV']


@pytest.mark.parametrize(
  'text, line, problem',
  [
    ('>a\nMK*V\n', 1, 'non-amino-acid'),
    ('>a\nMK1V\n>b\nMK\n', 1, 'non-amino-acid'),
    ('>a\nMKV\n>b\n\n>c\nMK\n', 3, 'empty sequence'),
    ('MKV\n>a\nMK\n', 1, 'before the first FASTA header'),
    ('>a\nMKV\n>\nMK\n', 3, 'without an identifier'),
  ],
)
def test_errors_name_file_and_line(tmp_path, text, line, problem):
  path = _write(tmp_path, text)
  with pytest.raises(InputError, match=problem) as err:
    list(read_fasta(path))
  assert err.value.line == line
  assert str(err.value).startswith(f'{path}:{line}: ')
