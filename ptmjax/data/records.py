"""Plain records and bookkeeping shared by every raw-format parser.

Parsers return `ProteinRecord`s and fill a `Tally`: every skipped or normalised
input is counted under a named key, so a build can report exactly what it left
out. Malformed input raises `InputError`, whose message names file and line.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import dataclasses
import gzip
import io
import logging
import os
import pathlib
import sys
import zlib
from collections.abc import Iterator

import numpy as np

from ptmjax.data import ptm_types
from ptmjax.errors import UserError

log = logging.getLogger(__name__)

STANDARD_AMINO_ACIDS = 'ACDEFGHIKLMNPQRSTVWY'
# Selenocysteine, pyrrolysine and the ambiguity codes are valid one-letter
# codes: kept in the sequence, the tokenizers decide how to encode them.
EXTRA_AMINO_ACIDS = 'UOBZX'
ALPHABET = frozenset(STANDARD_AMINO_ACIDS + EXTRA_AMINO_ACIDS)


class InputError(UserError):
  """A raw input file is malformed; the message names file and line."""

  def __init__(self, path: str | os.PathLike, line: int | None, problem: str):
    self.path, self.line, self.problem = str(path), line, problem
    where = f'{path}:{line}' if line is not None else str(path)
    super().__init__(f'{where}: {problem}')


def prepare_output(path, inputs=()) -> pathlib.Path:
  """Checks, before any work, that `path` can be written: not a folder, not one of
  `inputs` (the input would be destroyed), its folder made if missing, writable. The
  problem otherwise surfaced only after all the inference."""
  path = pathlib.Path(path)
  for given in inputs:
    if given and os.fspath(given) != '-' and os.path.exists(given) and path.exists():
      if os.path.samefile(given, path):
        raise InputError(
          path, None, f'is also the input {os.fspath(given)!r}; choose another --out'
        )
  if path.is_dir():
    raise InputError(path, None, 'is a folder; --out names the file to write')
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise InputError(path, None, f'cannot create its folder ({e.strerror})') from None
  writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
  if not writable:
    raise InputError(path, None, 'not writable')
  if path.exists():
    log.warning('%s exists; it will be replaced', path)
  return path


@contextlib.contextmanager
def atomic_output(path, mode: str = 'w'):
  """Opens a temporary file beside `path` and renames it over `path` only when the block
  ends without error: a full disk or a crash never leaves a truncated file that looks
  valid, and never destroys the previous output. Yields the open file."""
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  try:
    with open(tmp, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    tmp.unlink(missing_ok=True)
    kept = 'the previous file is unchanged' if path.exists() else 'nothing was written'
    raise InputError(path, None, f'could not be written ({e.strerror or e}); {kept}') from None
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


class Tally(collections.Counter):
  """Named counts of what a parser read, normalised and skipped."""

  def log(self, title: str) -> None:
    log.info('%s: %s', title, ', '.join(f'{k}={v:,}' for k, v in sorted(self.items())))


@dataclasses.dataclass
class ProteinRecord:
  """One protein with per-residue labels in the canonical channel order.

  `labels[i, t]` is 1 (modified), 0 (not modified) or -1 (type t was not
  annotated by the source at residue i). `site_residues` maps 0-based site
  positions to the residue letter the source claims there; it is what decides
  a sequence conflict between sources.
  """

  id: str
  sequence: str
  labels: np.ndarray
  organism: str = ''
  taxon_id: int = -1
  source: str = ''
  site_residues: dict[int, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    expected = (len(self.sequence), ptm_types.NUM_TYPES)
    if self.labels.shape != expected or self.labels.dtype != np.int8:
      raise ValueError(
        f'{self.id}: labels {self.labels.dtype}{self.labels.shape} != int8{expected}'
      )

  @property
  def num_sites(self) -> int:
    return int((self.labels == ptm_types.POSITIVE).sum())


def unknown_labels(length: int) -> np.ndarray:
  return np.full((length, ptm_types.NUM_TYPES), ptm_types.UNKNOWN, np.int8)


class TextLines:
  """The lines of a text file, decoded as UTF-8 one line at a time, so that a byte that is
  not UTF-8 (Latin-1, UTF-16, binary) is an InputError naming the file and line instead
  of a bare UnicodeDecodeError. A UTF-8 byte-order mark is dropped. Lines keep their
  endings (as `open(..., newline='')`), for csv."""

  def __init__(self, path, raw, closes=None):
    self.path, self.raw, self.line, self.closes = path, raw, 0, closes

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.raw.close()
    if self.closes is not None:
      self.closes.close()

  def _decode(self, data: bytes) -> str:
    self.line += 1
    if self.line == 1 and data.startswith(codecs.BOM_UTF8):
      data = data[len(codecs.BOM_UTF8) :]
    try:
      return data.decode('utf-8')
    except UnicodeDecodeError as e:
      hint = ' (UTF-16?)' if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else ''
      raise InputError(
        self.path,
        self.line,
        f'not UTF-8 text{hint}: byte 0x{data[e.start]:02x} at column {e.start + 1}; '
        'save the file as UTF-8 (gzip is read as it is)',
      ) from None

  def __iter__(self):
    try:
      for data in self.raw:
        yield self._decode(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
      raise InputError(self.path, self.line + 1, f'broken gzip data ({e})') from None

  def readline(self) -> str:
    data = self.raw.readline()
    return self._decode(data) if data else ''

  def seek(self, offset: int) -> None:
    if offset != 0:
      raise ValueError('TextLines can only seek to the start')
    try:
      self.raw.seek(0)
    except (io.UnsupportedOperation, OSError):
      raise InputError(self.path, None, 'is read twice; a pipe cannot be: give a file') from None
    self.line = 0


def open_text(path: str | os.PathLike) -> TextLines:
  """Opens a text file for reading lines, gunzipping it when it is gzip (by its magic
  bytes, whatever its name). Pipes, process substitution (`<(zcat x.gz)`) and `-`
  (standard input) work too: the file is opened once and its first bytes peeked
  through the buffer, so nothing is read twice or lost (a second open of a pipe
  started after the bytes the first one had consumed)."""
  name = os.fspath(path)
  if name == '-':
    raw = sys.stdin.buffer
    path = '<stdin>'
  else:
    if os.path.isdir(name):
      raise InputError(name, None, 'is a folder; name a file')
    raw = open(name, 'rb')  # noqa: SIM115 - closed by TextLines
  buffered = raw if hasattr(raw, 'peek') else io.BufferedReader(raw)
  if buffered.peek(2)[:2] == b'\x1f\x8b':
    return TextLines(path, gzip.GzipFile(fileobj=buffered, mode='rb'), closes=buffered)
  return TextLines(path, buffered)


def normalise_sequence(raw: str, path, line: int, tally: Tally, *, allow_marks: str = '') -> str:
  """Upper-cases a sequence and checks its letters.

  Defined normalisations (each counted): lower case -> upper case; one trailing
  '*' (stop codon, as in SGD's orf_trans_all.fasta) removed. Anything else that
  is not a one-letter amino-acid code is an error naming file and line.

  Args:
    raw: the sequence text with whitespace already removed.
    path, line: where the sequence starts, for error messages.
    tally: counts normalisations.
    allow_marks: extra characters the caller handles itself (e.g. '#').
  """
  if raw.endswith('*'):
    raw = raw[:-1]
    tally['sequences_trailing_stop_removed'] += 1
  if raw != raw.upper():
    tally['sequences_lowercase_normalised'] += 1
    raw = raw.upper()
  residues = ''.join(c for c in raw if c not in allow_marks)
  if not residues:
    raise InputError(path, line, 'empty sequence')
  bad = sorted(set(raw) - ALPHABET - set(allow_marks))
  if bad:
    raise InputError(
      path,
      line,
      f'sequence has non-amino-acid characters {bad} '
      f'(allowed: {STANDARD_AMINO_ACIDS} and {EXTRA_AMINO_ACIDS})',
    )
  return raw


@dataclasses.dataclass
class FastaRecord:
  header: str  # without '>'
  sequence: str
  line: int  # 1-based line of the header

  @property
  def id(self) -> str:
    return self.header.split()[0] if self.header.split() else ''


def read_fasta(path, tally: Tally | None = None, *, allow_marks: str = '') -> Iterator[FastaRecord]:
  """Yields the records of a (possibly gzipped) FASTA file, normalised.

  Raises InputError for text before the first header, an empty header, an empty
  or non-protein sequence.
  """
  tally = Tally() if tally is None else tally
  header, header_line, chunks = None, 0, []

  def finish():
    try:
      seq = normalise_sequence(''.join(chunks), path, header_line, tally, allow_marks=allow_marks)
    except InputError as e:
      name = header.split()[0]
      raise InputError(path, header_line, f'record {name!r}: {e.problem}') from None
    tally['fasta_records'] += 1
    return FastaRecord(header, seq, header_line)

  with open_text(path) as f:
    for line_no, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      if line.startswith('>'):
        if header is not None:
          yield finish()
        header, header_line, chunks = line[1:].strip(), line_no, []
        if not header:
          raise InputError(path, line_no, 'FASTA header without an identifier')
      elif header is None:
        raise InputError(path, line_no, 'sequence text before the first FASTA header')
      else:
        chunks.append(''.join(line.split()))
  if header is not None:
    yield finish()


def protein_chunks(path, residues: int = 1 << 21) -> Iterator[list[tuple[str, str]]]:
  """(id, sequence) pairs of a FASTA file in chunks of about `residues` residues, read as
  they are needed: `predict` and `embed` hold one chunk, not the proteome. The checks of
  `read_proteins` hold across chunks (unique ids, at least one record)."""
  seen: dict[str, int] = {}
  chunk, size = [], 0
  for record in read_fasta(path):
    if record.id in seen:
      raise InputError(
        path, record.line, f'record {record.id!r} repeats the id of line {seen[record.id]}'
      )
    seen[record.id] = record.line
    chunk.append((record.id, record.sequence))
    size += len(record.sequence)
    if size >= residues:
      yield chunk
      chunk, size = [], 0
  if chunk:
    yield chunk
  if not seen:
    raise InputError(path, None, 'no FASTA records (an empty file?)')


def read_proteins(path) -> list[tuple[str, str]]:
  """(id, sequence) pairs of a FASTA file; lowercase accepted, ids must be unique.

  Invalid letters, empty records and repeated ids raise an InputError naming
  the file, line and record.
  """
  return [pair for chunk in protein_chunks(path) for pair in chunk]
