"""Parser of the YAAM (Yeast Amino Acid Modifications) text export.

The export is a `Version:` line followed by one section per annotation type. A
section is a line holding only its name, its own tab-separated header line, and
one row per (site, publication); headers differ between sections, so columns are
found by name. Sites are checked against the S288C proteome: the residue letter
must match the sequence at the 1-based position.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ptmjax.data import ptm_types
from ptmjax.data.records import InputError, ProteinRecord, Tally, open_text, read_fasta

log = logging.getLogger(__name__)

ORGANISM = 'Saccharomyces cerevisiae S288C'
TAXON_ID = 559292
_REQUIRED_COLUMNS = ('Systematic Name', 'Residue', 'Position')


@dataclasses.dataclass
class YaamParse:
  labeled: list[ProteinRecord]  # proteins with >= 1 consistent site
  unlabeled: list[ProteinRecord]  # the rest of the proteome, all labels -1
  tally: Tally
  version: str


def read_proteome(path, tally: Tally | None = None) -> dict[str, str]:
  """Reads an S288C proteome FASTA: SGD's orf_trans_all or `>ORF GENE` headers.

  Returns {systematic ORF name: sequence}. A repeated ORF name is an error.
  """
  tally = Tally() if tally is None else tally
  proteome: dict[str, str] = {}
  for rec in read_fasta(path, tally):
    if rec.id in proteome:
      raise InputError(path, rec.line, f'ORF {rec.id!r} appears twice in the proteome')
    proteome[rec.id] = rec.sequence
  return proteome


def parse_yaam(yaam_path, proteome: dict[str, str], tally: Tally | None = None) -> YaamParse:
  """Parses the YAAM export against a proteome.

  Rows that disagree with the proteome are dropped and counted under
  `rows_residue_mismatch`, `rows_orf_missing`, `rows_position_out_of_range`;
  repeated (ORF, position, section) rows count under `rows_duplicate_site`.
  Structural problems (unknown section, wrong column count, a position that is
  not a number) raise InputError naming file and line.
  """
  tally = Tally() if tally is None else tally
  channel_of = {s: ptm_types.INDEX[c] for s, c in ptm_types.YAAM_SECTIONS.items()}
  sites: set[tuple[str, int, int]] = set()
  version, section, columns = '', None, None

  with open_text(yaam_path) as f:
    for line_no, line in enumerate(f, 1):
      line = line.rstrip('\r\n')
      if not line.strip():
        continue
      if line_no == 1 and line.lower().startswith('version:'):
        version = line.split(':', 1)[1].strip()
        continue
      if '\t' not in line:
        name = line.strip()
        if name not in channel_of:
          raise InputError(
            yaam_path, line_no, f'unknown section header {name!r}; known: {sorted(channel_of)}'
          )
        section, columns = name, None
        tally[f'sections/{name}'] += 0  # a section with no row still shows up
        continue
      if section is None:
        raise InputError(yaam_path, line_no, 'table row before any section header')
      fields = line.split('\t')
      if columns is None:
        missing = [c for c in _REQUIRED_COLUMNS if c not in fields]
        if missing:
          raise InputError(
            yaam_path, line_no, f'header of section {section!r} lacks columns {missing}'
          )
        columns = {name: i for i, name in enumerate(fields)}
        continue
      if len(fields) != len(columns):
        raise InputError(
          yaam_path,
          line_no,
          f'expected {len(columns)} tab-separated fields in section {section!r}, got {len(fields)}',
        )
      tally['rows'] += 1
      orf = fields[columns['Systematic Name']].strip()
      residue = fields[columns['Residue']].strip().upper()
      pos_text = fields[columns['Position']].strip()
      try:
        pos = int(pos_text)
      except ValueError:
        raise InputError(yaam_path, line_no, f'position {pos_text!r} is not a number') from None
      if len(residue) != 1:
        raise InputError(yaam_path, line_no, f'residue {residue!r} is not one letter')
      seq = proteome.get(orf)
      if seq is None:
        tally['rows_orf_missing'] += 1
      elif not 1 <= pos <= len(seq):
        tally['rows_position_out_of_range'] += 1
      elif seq[pos - 1] != residue:
        tally['rows_residue_mismatch'] += 1
      else:
        tally['rows_consistent'] += 1
        tally[f'sections/{section}'] += 1
        key = (orf, pos - 1, channel_of[section])
        if key in sites:
          tally['rows_duplicate_site'] += 1
        sites.add(key)

  # YAAM annotates every one of its sections on every residue of a listed
  # protein; `other` is not a YAAM section, so it stays unknown.
  known = np.full(ptm_types.NUM_TYPES, ptm_types.UNKNOWN, np.int8)
  known[list(channel_of.values())] = ptm_types.NEGATIVE
  by_orf: dict[str, list[tuple[int, int]]] = {}
  for orf, pos, channel in sites:
    by_orf.setdefault(orf, []).append((pos, channel))
  labeled, unlabeled = [], []
  for orf in sorted(proteome):
    seq = proteome[orf]
    if orf in by_orf:
      labels = np.tile(known, (len(seq), 1))
      pos, ch = np.array(by_orf[orf]).T
      labels[pos, ch] = ptm_types.POSITIVE
      site_residues = {int(p): seq[p] for p in pos}
      labeled.append(ProteinRecord(orf, seq, labels, ORGANISM, TAXON_ID, 'yaam', site_residues))
    else:
      labels = np.full((len(seq), ptm_types.NUM_TYPES), ptm_types.UNKNOWN, np.int8)
      unlabeled.append(ProteinRecord(orf, seq, labels, ORGANISM, TAXON_ID, 'yaam'))
  tally['sites'] = len(sites)
  tally['proteins_labeled'] = len(labeled)
  tally['proteins_unlabeled'] = len(unlabeled)
  return YaamParse(labeled, unlabeled, tally, version)
