"""ptmDB parsers and merge: the handmade fixture, bad input and the real multi-organism files."""

import numpy as np
import pytest
from conftest import DUMMY_PTMDB

from ptmjax.data import ptm_types
from ptmjax.data.builders.ptmdb import parse as ptmdb
from ptmjax.data.records import InputError, Tally

I = ptm_types.INDEX  # noqa: E741


def _by_id(records):
  return {r.id: r for r in records}


def test_discover_sorts_files_by_format():
  found = ptmdb.discover(DUMMY_PTMDB)
  assert [p.name for p in found.uniprot] == ['uniprot_small.tsv']
  assert [(p.name, e.residues) for p, e in found.annotated_fasta] == [
    ('small_phospho_st_test.fasta', 'ST'),
    ('small_phospho_y_test.fasta', 'Y'),
  ]
  assert [p.name for p in found.dbptm] == ['dbptm_sites.txt']
  assert [p.name for p in found.sequence_fasta] == ['uniprot_sequences.fasta']
  assert [p.name for p in found.unrecognised] == ['README.txt']


def test_uniprot_table():
  tally = Tally()
  recs = _by_id(ptmdb.parse_uniprot_table(DUMMY_PTMDB / 'uniprot' / 'uniprot_small.tsv', tally))
  assert tally['uniprot/sites'] == 7
  assert tally['uniprot/sites_on_other_isoform'] == 1
  assert tally['uniprot/sites_residue_mismatch'] == 1  # 'Phosphoserine' on a T
  assert tally['uniprot/sites_out_of_range'] == 1
  a = recs['P11111']
  assert a.taxon_id == 9606
  assert np.flatnonzero(a.labels[:, I['phosphorylation']] == 1).tolist() == [9]
  assert a.labels[1, I['nt_acetylation']] == 1 and a.labels[14, I['acetylation']] == 1
  assert a.labels[19, I['methylation']] == 1
  # MOD_RES says nothing about cross-links, sugars or binding sites.
  for name in ('ubiquitination', 'sumoylation', 'glycosylation', 'lipidation', 'metal_binding'):
    assert (a.labels[:, I[name]] == -1).all(), name
  assert (a.labels[:, I['phosphorylation']] >= 0).all()
  assert recs['P22222'].labels[4, I['other']] == 1  # crotonyllysine


def test_annotated_fasta_marks_only_declared_type_and_residues():
  tally = Tally()
  entry = ptmdb.ManifestEntry('*', 'phosphorylation', 'ST')
  path = DUMMY_PTMDB / 'annotated' / 'small_phospho_st_test.fasta'
  recs = _by_id(ptmdb.parse_annotated_fasta(path, entry, tally))
  d = recs['Q44444']
  assert d.organism == 'Homo sapiens' and d.taxon_id == 9606
  phos = d.labels[:, I['phosphorylation']]
  is_st = np.array([c in 'ST' for c in d.sequence])
  assert (phos[~is_st] == -1).all()  # Y and the rest: not annotated by this file
  assert (phos[is_st] >= 0).all() and np.flatnonzero(phos == 1).tolist() == [3]
  others = np.delete(d.labels, I['phosphorylation'], axis=1)
  assert (others == -1).all()


@pytest.mark.parametrize(
  'text, problem',
  [
    ('>sp|A|B\n#MKV\n', 'not preceded'),
    ('>sp|A|B\nMK##V\n', 'not preceded'),
    ('>sp|A|B\nMK@V\n', 'non-amino'),
  ],
)
def test_annotated_fasta_errors(tmp_path, text, problem):
  path = tmp_path / 'x_phospho_st.fasta'
  path.write_text(text)
  with pytest.raises(InputError, match=problem):
    ptmdb.parse_annotated_fasta(path, ptmdb.DEFAULT_MANIFEST[0], Tally())


def test_undeclared_annotated_fasta_is_an_error(tmp_path):
  (tmp_path / 'mystery.fasta').write_text('>sp|A|B\nMKS#V\n')
  with pytest.raises(InputError, match='not declared'):
    ptmdb.discover(tmp_path)
  (tmp_path / ptmdb.MANIFEST_NAME).write_text('mystery*\tglycosylation\tNST\n')
  assert ptmdb.discover(tmp_path).annotated_fasta[0][1].channel == 'glycosylation'


def test_dbptm_window_check_and_counts():
  tally = Tally()
  seqs = ptmdb.read_uniprot_fasta([DUMMY_PTMDB / 'dbptm' / 'uniprot_sequences.fasta'], tally)
  recs = _by_id(ptmdb.parse_dbptm(DUMMY_PTMDB / 'dbptm' / 'dbptm_sites.txt', seqs, tally))
  assert tally['dbptm/rows'] == 6 and tally['dbptm/sites'] == 4
  assert tally['dbptm/sites_window_mismatch'] == 1 and tally['dbptm/sites_sequence_missing'] == 1
  o = recs['O55555']
  assert o.labels[9, I['acetylation']] == 1 and o.labels[20, I['phosphorylation']] == 1
  assert o.labels[32, I['glycosylation']] == 1
  assert (o.labels[:, I['methylation']] == -1).all()  # no methylation file


def test_dbptm_bad_lines(tmp_path):
  path = tmp_path / 'd.txt'
  path.write_text('X\tP1\t5\tPhosphorylation\t1\n')
  with pytest.raises(InputError, match='expected 6'):
    ptmdb.parse_dbptm(path, {}, Tally())
  path.write_text('X\tP1\tfive\tPhosphorylation\t1\tAAA\n')
  with pytest.raises(InputError, match='not a number'):
    ptmdb.parse_dbptm(path, {}, Tally())


def test_merge_unites_sources_and_resolves_sequence_conflicts():
  tally = Tally()
  recs = ptmdb.parse_manual_dir(DUMMY_PTMDB, ptmdb.FORMATS, tally)
  merged = _by_id(ptmdb.merge_records(recs, tally))
  assert sorted(merged) == ['O55555', 'P11111', 'P22222', 'Q33333', 'Q44444']
  c = merged['Q33333']
  phos = c.labels[:, I['phosphorylation']]
  # UniProt S7 + ST file S7,T12 + Y file Y30; UniProt makes every residue known.
  assert np.flatnonzero(phos == 1).tolist() == [6, 11, 29]
  assert (phos >= 0).all()
  assert c.organism == 'Saccharomyces cerevisiae (strain ATCC 204508 / S288c)'
  assert c.taxon_id == 559292 and c.source.count('+') == 2
  # P22222: the UniProt sequence agrees with both site residues (K5, Y8), the
  # FASTA one with one, so the UniProt sequence is kept and the conflict counted.
  b = merged['P22222']
  assert b.sequence[7] == 'Y' and tally['sequence_conflicts'] == 1
  assert tally['records_dropped_sequence_conflict'] == 1
  assert b.taxon_id == 10090  # filled from the FASTA OX of the same organism
  # dbPTM's file covers glycosylation, so P11111 (UniProt + dbPTM) knows it.
  assert (merged['P11111'].labels[:, I['glycosylation']] == 0).all()


def test_real_files(shared_data):
  tally = Tally()
  root = shared_data / 'multiorganism'
  merged = ptmdb.merge_records(ptmdb.parse_manual_dir(root, ptmdb.FORMATS, tally), tally)
  # Checked by hand: the union of accessions over the six CSVs and three FASTAs.
  assert len(merged) == 9233
  assert sum(len(r.sequence) for r in merged) == 5_720_429
  assert sum('Saccharomyces cerevisiae' in r.organism for r in merged) == 349
  assert tally['sequence_conflicts'] == 2
  assert tally['fasta_records'] == 2476 + 5334 + 318
  assert tally['annotated_fasta/sites'] == 8759 + 9427 + 499
  assert tally['uniprot/notes_unrecognised'] == 0
  assert tally['files_unrecognised'] == 0
  uniprot = ptmdb.merge_records(ptmdb.parse_manual_dir(root, ('uniprot',), Tally()), Tally())
  assert len(uniprot) == 1594 and sum(len(r.sequence) for r in uniprot) == 697_882
