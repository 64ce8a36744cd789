"""Parsers of the multi-organism PTM sources that make up ptmDB, and their merge.

Three raw formats, each a plain function returning `ProteinRecord`s:
- UniProt table exports (CSV/TSV) with a `Modified residue` column of MOD_RES
  features;
- annotated FASTA, where '#' follows each modified residue; which PTM type and
  which residues a file annotates is declared in a manifest;
- dbPTM site tables (no header: entry name, accession, position, type, PubMed
  ids, 21-residue window) with sequences from a UniProt FASTA.

`merge_records` unites records of the same accession across files.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import logging
import pathlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

from ptmjax.data import ptm_types
from ptmjax.data.records import (
  InputError,
  ProteinRecord,
  Tally,
  normalise_sequence,
  open_text,
  read_fasta,
  unknown_labels,
)

log = logging.getLogger(__name__)

FORMATS = ('dbptm', 'uniprot', 'annotated_fasta')
MANIFEST_NAME = 'ptm_manifest.tsv'
# `MOD_RES 33; /note="..."`, or `MOD_RES Q8NC51-3:237; ...` for a site on
# another isoform, whose position does not refer to the canonical sequence.
_MOD_RES_RE = re.compile(r'MOD_RES\s+(?:([A-Z0-9]+-\d+):)?(\d+);\s*/note="([^"]*)"')
_HEADER_FIELD_RE = re.compile(r'\b(OS|OX|GN|PE|SV)=')


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
  """An annotated-FASTA file pattern, the type it marks and on which residues."""

  pattern: str
  channel: str
  residues: str


# Used when the manual dir has no ptm_manifest.tsv; matches the MusiteDeep
# phosphosite files (`*_phospho_st_*`: S/T marked, `*_phospho_y_*`: Y marked).
DEFAULT_MANIFEST: tuple[ManifestEntry, ...] = (
  ManifestEntry('*phospho_st*', 'phosphorylation', 'ST'),
  ManifestEntry('*phospho_y*', 'phosphorylation', 'Y'),
)


# --- UniProt table export -----------------------------------------------------


def canonical_organism(organism: str) -> str:
  """Drops UniProt's trailing common name, as FASTA `OS=` fields have it.

  'Homo sapiens (Human)' -> 'Homo sapiens'; 'Saccharomyces cerevisiae (strain
  ATCC 204508 / S288c) (Baker's yeast)' -> '... (strain ATCC 204508 / S288c)';
  'Escherichia coli (strain K12)' is kept, since a strain is no common name.
  """
  organism = ' '.join(organism.split())
  m = re.search(r'\s*\(([^()]*)\)$', organism)
  if m and not re.match(r'(strain|isolate|subsp|var\.|cultivar|biovar|serotype)\b', m.group(1)):
    organism = organism[: m.start()]
  return organism


def parse_uniprot_table(path, tally: Tally) -> list[ProteinRecord]:
  """Parses a UniProt table export (CSV or TSV) with MOD_RES features.

  Channels covered by MOD_RES are known (0/1) on every residue; the others stay
  -1. A site whose residue disagrees with the note ('Phosphoserine' on a K) or
  lies past the end is dropped and counted.
  """
  with open_text(path) as f:
    first = f.readline()
    f.seek(0)
    delimiter = '\t' if first.count('\t') > first.count(',') else ','
    reader = csv.DictReader(f, delimiter=delimiter)
    missing = [
      c for c in ('Entry', 'Sequence', 'Modified residue') if c not in (reader.fieldnames or [])
    ]
    if missing:
      raise InputError(path, 1, f'UniProt table lacks columns {missing}')
    known = np.full(ptm_types.NUM_TYPES, ptm_types.UNKNOWN, np.int8)
    known[[ptm_types.INDEX[c] for c in ptm_types.MOD_RES_CHANNELS]] = ptm_types.NEGATIVE
    records = []
    for row in reader:
      line = reader.line_num
      tally['uniprot/rows'] += 1
      acc = (row['Entry'] or '').strip()
      if not acc:
        raise InputError(path, line, 'empty Entry')
      seq = normalise_sequence(''.join((row['Sequence'] or '').split()), path, line, tally)
      features = row['Modified residue'] or ''
      matches = _MOD_RES_RE.findall(features)
      if len(matches) != features.count('MOD_RES'):
        raise InputError(path, line, f'{acc}: malformed MOD_RES feature text {features[:120]!r}')
      labels = np.tile(known, (len(seq), 1))
      site_residues = {}
      for isoform, pos_text, note in matches:
        if isoform:
          tally['uniprot/sites_on_other_isoform'] += 1
          continue
        pos = int(pos_text) - 1
        channel, recognised = ptm_types.map_mod_res_note(note)
        base = ptm_types.base_note(note)
        tally[f'notes/{base} -> {channel}'] += 1
        if not recognised:
          tally['uniprot/notes_unrecognised'] += 1
          log.warning('%s:%d: MOD_RES note %r matches no rule; kept in `other`', path, line, note)
        residue = ptm_types.note_residue(note)
        if not 0 <= pos < len(seq):
          tally['uniprot/sites_out_of_range'] += 1
        elif residue is not None and seq[pos] != residue:
          tally['uniprot/sites_residue_mismatch'] += 1
        else:
          tally['uniprot/sites'] += 1
          labels[pos, ptm_types.INDEX[channel]] = ptm_types.POSITIVE
          site_residues[pos] = seq[pos]
      taxon = -1
      if (row.get('Organism (ID)') or '').strip().isdigit():
        taxon = int(row['Organism (ID)'])
      records.append(
        ProteinRecord(
          acc,
          seq,
          labels,
          (row.get('Organism') or '').strip(),
          taxon,
          f'uniprot:{pathlib.Path(path).name}',
          site_residues,
        )
      )
  return records


# --- Annotated FASTA ----------------------------------------------------------


def parse_uniprot_header(header: str) -> tuple[str, str, int]:
  """'sp|P12345|NAME_HUMAN desc OS=Homo sapiens OX=9606 GN=..' -> (acc, organism, taxon)."""
  first = header.split()[0]
  parts = first.split('|')
  acc = parts[1] if len(parts) >= 3 and parts[0] in ('sp', 'tr') else first
  fields, organism, taxon = {}, '', -1
  pieces = _HEADER_FIELD_RE.split(header)
  for key, value in zip(pieces[1::2], pieces[2::2], strict=True):
    fields[key] = value.strip()
  organism = fields.get('OS', '')
  if fields.get('OX', '').isdigit():
    taxon = int(fields['OX'])
  return acc, organism, taxon


def read_manifest(path) -> tuple[ManifestEntry, ...]:
  """Reads `pattern<TAB>channel<TAB>residues` lines ('#' starts a comment)."""
  entries = []
  with open_text(path) as f:
    for line_no, line in enumerate(f, 1):
      line = line.split('#', 1)[0].strip()
      if not line:
        continue
      fields = line.split('\t')
      if len(fields) != 3:
        raise InputError(path, line_no, 'expected pattern<TAB>ptm_type<TAB>residues')
      pattern, channel, residues = (x.strip() for x in fields)
      if channel not in ptm_types.INDEX:
        raise InputError(
          path, line_no, f'unknown PTM type {channel!r}; known: {ptm_types.PTM_NAMES}'
        )
      entries.append(ManifestEntry(pattern, channel, residues.upper()))
  return tuple(entries)


def manifest_entry_for(path, manifest: Sequence[ManifestEntry]) -> ManifestEntry | None:
  name = pathlib.Path(path).name
  for entry in manifest:
    if fnmatch.fnmatch(name, entry.pattern):
      return entry
  return None


def parse_annotated_fasta(path, entry: ManifestEntry, tally: Tally) -> list[ProteinRecord]:
  """Parses a FASTA whose sequences carry '#' after each modified residue.

  Only `entry.channel` on `entry.residues` is known (0/1); every other channel
  and residue is -1, since the file says nothing about them.
  """
  channel = ptm_types.INDEX[entry.channel]
  records = []
  for rec in read_fasta(path, tally, allow_marks='#'):
    acc, organism, taxon = parse_uniprot_header(rec.header)
    residues, sites = [], []
    for char in rec.sequence:
      if char == '#':
        if not residues or (sites and sites[-1] == len(residues) - 1):
          raise InputError(path, rec.line, f'{acc}: "#" not preceded by a residue')
        sites.append(len(residues) - 1)
      else:
        residues.append(char)
    seq = ''.join(residues)
    labels = unknown_labels(len(seq))
    declared = np.isin(np.frombuffer(seq.encode(), 'S1'), [r.encode() for r in entry.residues])
    labels[declared, channel] = ptm_types.NEGATIVE
    for pos in sites:
      if seq[pos] not in entry.residues:
        tally['annotated_fasta/sites_on_undeclared_residue'] += 1
      labels[pos, channel] = ptm_types.POSITIVE
    tally['annotated_fasta/sites'] += len(sites)
    source = f'annotated_fasta:{pathlib.Path(path).name}'
    records.append(
      ProteinRecord(acc, seq, labels, organism, taxon, source, {p: seq[p] for p in sites})
    )
  return records


# --- dbPTM --------------------------------------------------------------------


def read_uniprot_fasta(paths: Iterable, tally: Tally) -> dict[str, tuple[str, str, int]]:
  """{accession: (sequence, organism, taxon)} from UniProt FASTA files."""
  out = {}
  for path in paths:
    for rec in read_fasta(path, tally):
      acc, organism, taxon = parse_uniprot_header(rec.header)
      out[acc] = (rec.sequence, organism, taxon)
  return out


def parse_dbptm(
  path, sequences: dict[str, tuple[str, str, int]], tally: Tally
) -> list[ProteinRecord]:
  """Parses a dbPTM site table; sequences come from a UniProt FASTA.

  The channels that occur in the file are known (0/1) on every residue of the
  proteins it lists. A site whose 21-residue window disagrees with the
  sequence, or whose accession has no sequence, is dropped and counted.
  """
  sites: dict[str, list[tuple[int, int]]] = {}
  channels_seen: set[int] = set()
  with open_text(path) as f:
    for line_no, line in enumerate(f, 1):
      line = line.rstrip('\r\n')
      if not line.strip():
        continue
      fields = line.split('\t')
      if len(fields) != 6:
        raise InputError(path, line_no, f'expected 6 tab-separated dbPTM fields, got {len(fields)}')
      _, acc, pos_text, ptm_type, _, window = (x.strip() for x in fields)
      try:
        pos = int(pos_text) - 1
      except ValueError:
        raise InputError(path, line_no, f'position {pos_text!r} is not a number') from None
      tally['dbptm/rows'] += 1
      window = window.upper()
      if len(window) % 2 != 1:
        raise InputError(path, line_no, f'window {window!r} has even length')
      if acc not in sequences:
        tally['dbptm/sites_sequence_missing'] += 1
        continue
      seq = sequences[acc][0]
      half = len(window) // 2
      expected = ''.join(
        seq[i] if 0 <= i < len(seq) else '-' for i in range(pos - half, pos + half + 1)
      )
      if not 0 <= pos < len(seq) or expected != window:
        tally['dbptm/sites_window_mismatch'] += 1
        continue
      channel, recognised = ptm_types.map_dbptm_type(ptm_type, seq[pos])
      tally[f'dbptm_types/{ptm_type} -> {channel}'] += 1
      if not recognised:
        tally['dbptm/types_unrecognised'] += 1
        log.warning(
          '%s:%d: dbPTM type %r matches no rule; kept in `other`', path, line_no, ptm_type
        )
      channel_index = ptm_types.INDEX[channel]
      channels_seen.add(channel_index)
      sites.setdefault(acc, []).append((pos, channel_index))
      tally['dbptm/sites'] += 1
  records = []
  for acc, acc_sites in sorted(sites.items()):
    seq, organism, taxon = sequences[acc]
    labels = unknown_labels(len(seq))
    labels[:, sorted(channels_seen)] = ptm_types.NEGATIVE
    pos, ch = np.array(acc_sites).T
    labels[pos, ch] = ptm_types.POSITIVE
    records.append(
      ProteinRecord(
        acc,
        seq,
        labels,
        organism,
        taxon,
        f'dbptm:{pathlib.Path(path).name}',
        {int(p): seq[p] for p in pos},
      )
    )
  return records


# --- Finding files and merging ------------------------------------------------


@dataclasses.dataclass
class Discovered:
  uniprot: list[pathlib.Path] = dataclasses.field(default_factory=list)
  annotated_fasta: list[tuple[pathlib.Path, ManifestEntry]] = dataclasses.field(
    default_factory=list
  )
  dbptm: list[pathlib.Path] = dataclasses.field(default_factory=list)
  sequence_fasta: list[pathlib.Path] = dataclasses.field(default_factory=list)
  unrecognised: list[pathlib.Path] = dataclasses.field(default_factory=list)


def _first_line(path) -> str:
  with open_text(path) as f:
    for line in f:
      if line.strip():
        return line.rstrip('\r\n')
  return ''


def discover(manual_dir) -> Discovered:
  """Sorts every file under `manual_dir` (recursively) by format.

  UniProt tables are recognised by their header, annotated FASTA by the
  manifest (`ptm_manifest.tsv` anywhere in the dir, else DEFAULT_MANIFEST),
  dbPTM tables by six tab-separated fields with a numeric position. A FASTA
  with '#' marks that no manifest line declares is an error, since guessing
  its PTM type would invent labels.
  """
  root = pathlib.Path(manual_dir)
  if not root.is_dir():
    raise FileNotFoundError(f'manual dir {root} does not exist')
  files = sorted(p for p in root.rglob('*') if p.is_file() and not p.name.startswith('.'))
  manifests = [p for p in files if p.name == MANIFEST_NAME]
  manifest = tuple(e for m in manifests for e in read_manifest(m)) or DEFAULT_MANIFEST
  found = Discovered()
  for path in files:
    if path.name == MANIFEST_NAME:
      continue
    name = path.name.lower().removesuffix('.gz')
    first = _first_line(path)
    if name.endswith(('.fasta', '.fa', '.fas', '.faa')):
      entry = manifest_entry_for(path, manifest)
      if entry is not None:
        found.annotated_fasta.append((path, entry))
      else:
        with open_text(path) as f:
          if any('#' in line for line in f if not line.startswith('>')):
            raise InputError(
              path,
              None,
              f'annotated FASTA not declared in {MANIFEST_NAME} (pattern, type, residues)',
            )
        found.sequence_fasta.append(path)
    elif name.endswith(('.csv', '.tsv', '.tab')) and {
      'Entry',
      'Sequence',
      'Modified residue',
    } <= set(re.split(r'[,\t]', first)):
      found.uniprot.append(path)
    elif len(first.split('\t')) == 6 and first.split('\t')[2].strip().isdigit():
      found.dbptm.append(path)
    else:
      found.unrecognised.append(path)
  return found


def parse_manual_dir(manual_dir, formats: Sequence[str], tally: Tally) -> list[ProteinRecord]:
  """Parses every recognised file of the given formats under `manual_dir`."""
  found = discover(manual_dir)
  for path in found.unrecognised:
    log.warning('%s: not a recognised ptmDB file; skipped', path)
  tally['files_unrecognised'] = len(found.unrecognised)
  records: list[ProteinRecord] = []
  if 'uniprot' in formats:
    for path in found.uniprot:
      records += parse_uniprot_table(path, tally)
      tally['files/uniprot'] += 1
  if 'annotated_fasta' in formats:
    for path, entry in found.annotated_fasta:
      records += parse_annotated_fasta(path, entry, tally)
      tally['files/annotated_fasta'] += 1
  if 'dbptm' in formats and found.dbptm:
    if not found.sequence_fasta:
      raise InputError(manual_dir, None, 'dbPTM tables need a UniProt FASTA of their sequences')
    sequences = read_uniprot_fasta(found.sequence_fasta, tally)
    for path in found.dbptm:
      records += parse_dbptm(path, sequences, tally)
      tally['files/dbptm'] += 1
  if not records:
    raise InputError(manual_dir, None, f'no {"/".join(formats)} file found (searched recursively)')
  return records


def _site_agreement(seq: str, records: Sequence[ProteinRecord]) -> int:
  return sum(
    1 for r in records for p, aa in r.site_residues.items() if p < len(seq) and seq[p] == aa
  )


def merge_records(records: Sequence[ProteinRecord], tally: Tally) -> list[ProteinRecord]:
  """Unites records of the same accession: union of sites and of known types.

  Labels combine by element-wise maximum, so 1 beats 0 beats -1. When sources
  disagree on the sequence, the sequence that most of all sources' site
  residues agree with is kept; records with another sequence are dropped and
  counted (`sequence_conflicts`, `records_dropped_sequence_conflict`).
  """
  by_acc: dict[str, list[ProteinRecord]] = {}
  for r in records:
    by_acc.setdefault(r.id, []).append(r)
  # Taxon ids from FASTA headers (OX=) fill in tables that only name organisms.
  taxon_of = {}
  for r in records:
    if r.taxon_id >= 0 and r.organism:
      taxon_of.setdefault(canonical_organism(r.organism), r.taxon_id)
  merged = []
  for acc in sorted(by_acc):
    group = by_acc[acc]
    seqs = sorted({r.sequence for r in group})
    if len(seqs) > 1:
      best = max(seqs, key=lambda s: (_site_agreement(s, group), len(s)))
      tally['sequence_conflicts'] += 1
      tally['records_dropped_sequence_conflict'] += sum(r.sequence != best for r in group)
      log.warning(
        '%s: sources disagree on the sequence; kept the one %d site residues agree with',
        acc,
        _site_agreement(best, group),
      )
      group = [r for r in group if r.sequence == best]
    labels = np.maximum.reduce([r.labels for r in group])
    organism = canonical_organism(next((r.organism for r in group if r.organism), ''))
    taxon = next((r.taxon_id for r in group if r.taxon_id >= 0), -1)
    if taxon < 0:
      taxon = taxon_of.get(organism, -1)
    if taxon < 0:
      tally['proteins_taxon_unknown'] += 1
    site_residues = {}
    for r in group:
      site_residues.update(r.site_residues)
    source = '+'.join(sorted({r.source for r in group}))
    merged.append(
      ProteinRecord(acc, group[0].sequence, labels, organism, taxon, source, site_residues)
    )
  tally['proteins'] = len(merged)
  tally['residues'] = sum(len(r.sequence) for r in merged)
  return merged
