"""YAAM parser: the handmade fixture, bad input, and the measured counts of the real export."""

import numpy as np
import pytest
from conftest import DUMMY_YAAM

from ptmjax.data import ptm_types
from ptmjax.data.builders.yaam import parse as yaam
from ptmjax.data.records import InputError, Tally

PHOS = ptm_types.INDEX['phosphorylation']


def _parse(yaam_text=None, tmp_path=None):
  tally = Tally()
  proteome = yaam.read_proteome(DUMMY_YAAM / 's288c_proteins.fasta', tally)
  path = DUMMY_YAAM / 'yaam_test.txt'
  if yaam_text is not None:
    path = tmp_path / 'yaam_bad.txt'
    path.write_text(yaam_text)
  return yaam.parse_yaam(path, proteome, tally)


def test_fixture_counts_and_labels():
  parsed = _parse()
  t = parsed.tally
  assert parsed.version == '12/15/2021'
  assert t['rows'] == 13
  assert t['rows_consistent'] == 10
  assert t['rows_residue_mismatch'] == 1  # YAL002W 10 is A, row says S
  assert t['rows_orf_missing'] == 1  # YZZ999W
  assert t['rows_position_out_of_range'] == 1  # YBR010W 900
  assert t['rows_duplicate_site'] == 1  # YAL001C S5 from two papers
  assert t['sites'] == 9
  assert [r.id for r in parsed.labeled] == ['YAL001C', 'YAL002W', 'YBR010W', 'YCL005W']
  assert [r.id for r in parsed.unlabeled] == ['YDR001C']
  r = parsed.labeled[0]
  assert r.labels.shape == (60, ptm_types.NUM_TYPES)
  # 1-based position 5 is row 4 of the label array: no off-by-one.
  assert r.labels[4, PHOS] == 1 and r.sequence[4] == 'S'
  assert r.labels[11, PHOS] == 1 and r.labels[19, ptm_types.INDEX['acetylation']] == 1
  assert r.labels[29, ptm_types.INDEX['disulfide']] == 1
  assert r.num_sites == 4
  # YAAM never annotates `other`: unknown everywhere; its own channels are 0/1.
  assert (r.labels[:, ptm_types.INDEX['other']] == -1).all()
  assert set(np.unique(r.labels[:, PHOS])) == {0, 1}
  assert parsed.labeled[3].labels[6, ptm_types.INDEX['metal_binding']] == 1
  assert (parsed.unlabeled[0].labels == -1).all()


@pytest.mark.parametrize(
  'text, line, problem',
  [
    (
      'Phosphorylation\nid\tSystematic Name\tResidue\tPosition\tPmid\n1\tYAL001C\tS\tfive\t1\n',
      3,
      'not a number',
    ),
    (
      'Phosphorylation\nid\tSystematic Name\tResidue\tPosition\tPmid\n1\tYAL001C\tS\t5\n',
      3,
      'expected 5',
    ),
    (
      'Phosphorylation\nid\tSystematic Name\tResidue\tPosition\tPmid\nPhosphorylated\n',
      3,
      'unknown section',
    ),
    ('Crotonylation\n', 1, 'unknown section'),
    ('Phosphorylation\nid\tName\tResidue\tPosition\tPmid\n', 2, 'lacks columns'),
    ('id\tSystematic Name\tResidue\tPosition\tPmid\n', 1, 'before any section'),
  ],
)
def test_bad_input_names_file_and_line(tmp_path, text, line, problem):
  with pytest.raises(InputError, match=problem) as err:
    _parse(text, tmp_path)
  assert err.value.line == line and err.value.path.endswith('yaam_bad.txt')


def test_real_export_matches_measured_counts(shared_data):
  """The counts measured independently in ../shared/data/README.md."""
  tally = Tally()
  proteome = yaam.read_proteome(shared_data / 'yeast' / 's288c_r64_proteins.fasta', tally)
  assert len(proteome) == 5983
  parsed = yaam.parse_yaam(shared_data / 'yaam' / 'yaam_dec15_21.txt', proteome, tally)
  t = parsed.tally
  assert t['rows'] == 121_990
  assert t['rows_consistent'] == 121_748
  assert t['rows_residue_mismatch'] == 151
  assert t['rows_orf_missing'] == 88
  assert t['rows_position_out_of_range'] == 3
  assert len(parsed.labeled) == 4862
  assert sum(r.num_sites for r in parsed.labeled) == 59_394
  assert sum(len(r.sequence) for r in parsed.labeled) == 2_638_911
  modified_positions = sum(int((r.labels == 1).any(1).sum()) for r in parsed.labeled)
  assert modified_positions == 55_776
  per_section = {
      'Phosphorylation': 87_596, 'Ubiquitination': 14_859, 'Acetylation': 10_040,
      'Glycosylation': 1_955, 'Metal': 1_923, 'Succinylation': 1_751, 'ActiveSite': 1_108,
      'Oxidation': 871, 'NtAcetylation': 749, 'Methylation': 280, 'Disulfide': 262,
      'Lipidation': 180, 'Sumoylation': 134, 'Ca': 26, 'Nitration': 14,
  }  # fmt: skip
  assert {s: t[f'sections/{s}'] for s in per_section} == per_section
  assert len(parsed.unlabeled) == 5983 - 4862
