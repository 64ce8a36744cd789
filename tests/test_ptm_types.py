"""The canonical vocabulary and the mapping of source names onto it."""

import csv
import re

import pytest

from ptmjax.data import ptm_types


def test_vocabulary_is_consistent():
  assert len(set(ptm_types.PTM_NAMES)) == ptm_types.NUM_TYPES
  assert set(ptm_types.YAAM_SECTIONS.values()) <= set(ptm_types.PTM_NAMES)
  # 15 YAAM sections, each its own channel.
  assert len(set(ptm_types.YAAM_SECTIONS.values())) == 15
  non_mod = {ptm_types.PTM_NAMES[i] for i in range(ptm_types.NUM_TYPES)} - {
    ptm_types.PTM_NAMES[i] for i in ptm_types.MODIFICATION_CHANNELS
  }
  assert non_mod == {'calcium_binding', 'metal_binding', 'active_site'}


@pytest.mark.parametrize(
  'note, channel, residue',
  [
    ('Phosphoserine', 'phosphorylation', 'S'),
    ('Phosphothreonine; by CDK1', 'phosphorylation', 'T'),
    ('(Microbial infection) Phosphotyrosine; by host', 'phosphorylation', 'Y'),
    ('Diphosphoserine', 'phosphorylation', 'S'),
    ('N6-acetyllysine; alternate', 'acetylation', 'K'),
    ('N-acetylalanine', 'nt_acetylation', 'A'),
    ('N-acetylmethionine', 'nt_acetylation', 'M'),
    ('Omega-N-methylarginine', 'methylation', 'R'),
    ('N6,N6,N6-trimethyllysine', 'methylation', 'K'),
    ('Cysteine methyl ester', 'methylation', 'C'),
    ('N6-succinyllysine', 'succinylation', 'K'),
    ('S-(2-succinyl)cysteine', 'other', 'C'),
    ('Methionine sulfoxide', 'oxidation', 'M'),
    ("3'-nitrotyrosine", 'nitration', 'Y'),
    ('N6-poly(methylaminopropyl)lysine', 'other', 'K'),
    ('N6-crotonyllysine', 'other', 'K'),
    ('Citrulline', 'other', 'R'),
    ('5-glutamyl polyglutamate', 'other', 'E'),
    ('ADP-ribosyl glutamic acid', 'other', 'E'),
    ('Blocked amino end (Gly)', 'other', 'G'),
    ('Pyrrolidone carboxylic acid', 'other', None),
  ],
)
def test_mod_res_notes(note, channel, residue):
  assert ptm_types.map_mod_res_note(note) == (channel, True)
  assert ptm_types.note_residue(note) == residue


def test_unknown_note_goes_to_other_but_is_flagged():
  assert ptm_types.map_mod_res_note('Frobnicated lysine') == ('other', False)


def test_every_note_in_the_shared_files_is_recognised(shared_data):
  notes = set()
  for path in sorted((shared_data / 'multiorganism' / 'uniprot_export').glob('*.csv')):
    with open(path) as f:
      for row in csv.DictReader(f):
        notes |= set(re.findall(r'/note="([^"]*)"', row['Modified residue']))
  bases = {ptm_types.base_note(n) for n in notes}
  assert len(bases) == 99  # distinct base notes once qualifiers are removed
  unrecognised = [n for n in bases if not ptm_types.map_mod_res_note(n)[1]]
  assert unrecognised == []


@pytest.mark.parametrize(
  'ptm_type, residue, channel',
  [
    ('Phosphorylation', 'S', 'phosphorylation'),
    ('Acetylation', 'K', 'acetylation'),
    ('Acetylation', 'M', 'nt_acetylation'),
    ('N-linked Glycosylation', 'N', 'glycosylation'),
    ('O-linked Glycosylation', 'S', 'glycosylation'),
    ('S-palmitoylation', 'C', 'lipidation'),
    ('Ubiquitination', 'K', 'ubiquitination'),
    ('S-nitrosylation', 'C', 'other'),
    ('Malonylation', 'K', 'other'),
  ],
)
def test_dbptm_types(ptm_type, residue, channel):
  assert ptm_types.map_dbptm_type(ptm_type, residue) == (channel, True)
