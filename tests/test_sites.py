"""Site-centric outputs of `ptmjax predict`: `--format sites`, `gff3` (read back by a GFF3
parser) and `json` hold the same sites, those the per-residue TSV calls, with their +-7
context, calibrated probability and known training label."""

import csv
import json
import shutil

import numpy as np
import pytest

from ptmjax import cli, sites
from ptmjax.data import synthetic
from ptmjax.evaluation import calibration


@pytest.fixture(scope='module')
def proteins():
  seqs = {s['id'].decode(): s['sequence'].decode() for s in synthetic.generate(6, seed=11)}
  seqs['NOSITES'] = 'MAAAAGGGGLLLL'  # no candidate residue: a protein with no site
  return seqs


@pytest.fixture(scope='module')
def fasta(proteins, tmp_path_factory):
  path = tmp_path_factory.mktemp('sites') / 'in.fasta'
  path.write_text(''.join(f'>{k}\n{v}\n' for k, v in proteins.items()))
  return path


def _predict(model, fasta, out, *flags):
  assert cli.main(['predict', '--checkpoint', str(model), '--fasta', str(fasta),
                   '--out', str(out), *flags]) == 0  # fmt: skip
  return out


def _site_rows(path):
  lines = [x for x in path.read_text().splitlines() if not x.startswith('#')]
  return list(csv.DictReader(lines, delimiter='\t'))


def test_context_pads_past_either_terminus():
  assert sites.context('MKSPE', 2, 2) == 'MKSPE'
  assert sites.context('MKSPE', 0, 3) == '---MKSP'
  assert sites.context('MKSPE', 4, 3) == 'KSPE---'
  assert len(sites.context('M' * 30, 10)) == 15


def test_sites_are_the_called_candidates_with_their_context(
  quickstart_dir, fasta, proteins, tmp_path
):
  final = quickstart_dir / 'final'
  tsv = _site_rows(_predict(final, fasta, tmp_path / 'all.tsv', '--calls'))
  got = _site_rows(_predict(final, fasta, tmp_path / 'sites.tsv', '--format', 'sites'))
  meta = json.loads((final / 'ptmjax_model.json').read_text())['info']
  channels = [c for c in meta['channels'] if f'{c}_call' in tsv[0]]
  expected = [(r['protein'], int(r['position']), c) for r in tsv for c in channels
              if r[f'{c}_call'] == '1']  # fmt: skip
  assert expected, 'the quickstart model calls no site on these proteins'
  assert sorted((r['protein'], int(r['position']), r['channel']) for r in got) == sorted(expected)
  by_key = {(r['protein'], int(r['position'])): r for r in tsv}
  for r in got:
    seq, i = proteins[r['protein']], int(r['position']) - 1
    assert r['residue'] == seq[i] and r['context'] == sites.context(seq, i)
    assert len(r['context']) == 15 and r['context'][7] == seq[i]
    raw = float(by_key[r['protein'], i + 1][r['channel']])
    assert abs(float(r['probability']) - raw) <= 1e-4
    a, b = meta['calibration'][r['channel']]
    # (raw is the TSV's 4-decimal value: the calibrated one moves by the map's slope)
    assert abs(float(r['calibrated']) - calibration.apply_platt(np.float64(raw), a, b)) <= 2e-3
    assert r['call'] == '1' and r['known'] == 'NA'  # no known sites stored with this model


def test_gff3_reads_back_with_a_gff3_parser(quickstart_dir, fasta, proteins, tmp_path):
  gffutils = pytest.importorskip('gffutils')
  final = quickstart_dir / 'final'
  got = _site_rows(_predict(final, fasta, tmp_path / 'sites.tsv', '--format', 'sites'))
  gff = _predict(final, fasta, tmp_path / 'sites.gff3', '--format', 'gff3')
  lines = gff.read_text().splitlines()
  assert lines[0] == '##gff-version 3'
  regions = {x.split()[1]: int(x.split()[3]) for x in lines if x.startswith('##sequence-region')}
  assert regions == {k: len(v) for k, v in proteins.items()}
  db = gffutils.create_db(str(gff), ':memory:', merge_strategy='error')
  features = list(db.all_features())
  assert len(features) == len(got)
  for f in features:
    assert f.featuretype == sites.GFF_TYPE and f.source == 'ptmjax'
    assert 1 <= f.start == f.end <= regions[f.seqid]
    assert proteins[f.seqid][f.start - 1] == f.attributes['Name'][0].split()[1][0]
    assert float(f.attributes['probability'][0]) > 0
  assert {(f.seqid, f.start, f.attributes['channel'][0]) for f in features} == {
    (r['protein'], int(r['position']), r['channel']) for r in got
  }


def test_json_is_one_document_with_every_protein(quickstart_dir, fasta, proteins, tmp_path):
  final = quickstart_dir / 'final'
  got = _site_rows(_predict(final, fasta, tmp_path / 'sites.tsv', '--format', 'sites'))
  doc = json.loads(_predict(final, fasta, tmp_path / 's.json', '--format', 'json').read_text())
  assert doc['format'] == 'ptmjax-sites/1' and doc['model']['channels']
  assert [p['id'] for p in doc['proteins']] == list(proteins)  # NOSITES too, with no sites
  flat = [(p['id'], s['position'], s['channel']) for p in doc['proteins'] for s in p['sites']]
  assert sorted(flat) == sorted((r['protein'], int(r['position']), r['channel']) for r in got)


def test_top_k_keeps_each_proteins_best_candidates(quickstart_dir, fasta, proteins, tmp_path):
  final = quickstart_dir / 'final'
  tsv = _site_rows(_predict(final, fasta, tmp_path / 'all.tsv'))
  got = _site_rows(
    _predict(final, fasta, tmp_path / 'top.tsv', '--format', 'sites', '--top-k', '2')
  )
  for pid in proteins:
    for c in {r['channel'] for r in got}:
      mine = sorted(
        float(r['probability']) for r in got if r['protein'] == pid and r['channel'] == c
      )
      every = sorted(float(r[c]) for r in tsv if r['protein'] == pid and r[c] != 'NA')
      assert len(mine) == min(2, len(every))
      assert mine == pytest.approx(every[len(every) - len(mine) :], abs=1e-4)
  # --min-probability 0: every candidate residue of every channel.
  every = _site_rows(
    _predict(final, fasta, tmp_path / 'min.tsv', '--format', 'sites', '--min-probability', '0')
  )
  channels = {r['channel'] for r in every}
  assert len(every) == sum(r[c] != 'NA' for r in tsv for c in channels)


def test_known_sites_of_training_proteins_are_marked(quickstart_dir, fasta, proteins, tmp_path):
  model = tmp_path / 'model'
  shutil.copytree(quickstart_dir / 'final', model)
  pid = next(iter(proteins))
  called = _site_rows(_predict(model, fasta, tmp_path / 'a.tsv', '--format', 'sites'))
  mine = [r for r in called if r['protein'] == pid]
  assert mine
  known_pos = int(mine[0]['position'])
  key = sites.sequence_key(proteins[pid])
  (model / sites.KNOWN_FILE).write_text(json.dumps({key: {mine[0]['channel']: [known_pos]}}))
  got = _site_rows(_predict(model, fasta, tmp_path / 'b.tsv', '--format', 'sites'))
  for r in got:
    if r['protein'] != pid:
      assert r['known'] == 'NA'  # not a training protein
    elif r['channel'] == mine[0]['channel']:
      assert r['known'] == str(int(int(r['position']) == known_pos))


def test_site_selection_flags_need_a_site_format(quickstart_dir, fasta, tmp_path):
  code = cli.main(['predict', '--checkpoint', str(quickstart_dir / 'final'), '--fasta',
                   str(fasta), '--out', str(tmp_path / 'x.tsv'), '--top-k', '3'])  # fmt: skip
  assert code == 2
