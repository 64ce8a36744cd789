"""Predicted sites, the way a biologist reads them: one record per candidate residue that
is called (or in a protein's top k), with its sequence context, raw and calibrated
probability, the call, and the known label where the protein is one the model was
trained on.

    ptmjax predict --fasta x.fasta --format sites --out sites.tsv
    ptmjax predict --fasta x.fasta --format gff3  --out sites.gff3   (genome browsers)
    ptmjax predict --fasta x.fasta --format json  --out sites.json

Formats: `sites` (TSV), `gff3` (GFF3, one `modified_amino_acid_feature` per site, on the
protein's coordinates) and `json` (one document: the model, its channels and
thresholds, then each protein with its sites). Every writer streams: a chunk of
proteins is written before the next is predicted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.parse

import numpy as np

from ptmjax.evaluation import calibration

CONTEXT = 7  # residues each side: GPS's +-7 peptide (NetPhos prints +-4)
FORMATS = ('tsv', 'sites', 'gff3', 'json')
GFF_TYPE = 'modified_amino_acid_feature'  # Sequence Ontology SO:0001385
KNOWN_FILE = 'known_sites.json'  # in a model folder: its training proteins' sites


def sequence_key(sequence: str) -> str:
  """The key a known protein is found by: its sequence, not its name (ids differ across
  databases; the same sequence is the same protein to the model)."""
  return hashlib.sha1(sequence.upper().encode()).hexdigest()[:20]


def context(sequence: str, i: int, k: int = CONTEXT) -> str:
  """The 2k + 1 residues centred on 0-based position i, '-' past either terminus."""
  left = sequence[max(0, i - k) : i].rjust(k, '-')
  right = sequence[i + 1 : i + 1 + k].ljust(k, '-')
  return f'{left}{sequence[i]}{right}'


@dataclasses.dataclass(frozen=True)
class Site:
  protein: str
  position: int  # 1-based
  residue: str
  channel: str
  context: str
  probability: float  # the head's sigmoid
  calibrated: float | None  # Platt-scaled on validation (None: no calibration stored)
  call: int | None  # 1 at or above the stored validation threshold (None: no threshold)
  known: int | None  # the training label for a protein the model was trained on, else None

  def row(self) -> list[str]:
    def fmt(x):
      return 'NA' if x is None else (f'{x:.4f}' if isinstance(x, float) else str(x))

    return [self.protein, str(self.position), self.residue, self.channel, self.context,
            fmt(self.probability), fmt(self.calibrated), fmt(self.call), fmt(self.known)]  # fmt: skip


HEADER = ['protein', 'position', 'residue', 'channel', 'context', 'probability',
          'calibrated', 'call', 'known']  # fmt: skip


class SiteSelector:
  """Which candidate residues become sites, and their calibrated values and calls.

  Default: the called ones (raw probability at or above the channel's stored validation
  threshold; 0.5 where none is stored). `min_probability` instead keeps every candidate
  whose calibrated probability (raw where the model stores no calibration) reaches it;
  `top_k` keeps each protein's k best candidates per channel.
  """

  def __init__(self, meta: dict, channels, *, min_probability=None, top_k=None, known=None):
    info = meta.get('info', {})
    self.channels = list(channels)
    self.thresholds = info.get('thresholds') or {}
    self.calibration = info.get('calibration') or {}
    self.min_probability = min_probability
    self.top_k = top_k
    self.known = known or {}

  def sites(self, pid: str, sequence: str, probs: np.ndarray) -> list[Site]:
    """`probs`: raw float [length, channels], NaN off-candidate (`Predictor.predict`)."""
    seq = sequence.upper()
    known = self.known.get(sequence_key(seq))
    out = []
    for j, c in enumerate(self.channels):
      raw = probs[:, j].astype(np.float64)
      scored = ~np.isnan(raw)
      cal = calibration.apply_platt(raw, *self.calibration[c]) if c in self.calibration else None
      threshold = self.thresholds.get(c)
      calls = raw >= (0.5 if threshold is None else threshold)
      if self.top_k:
        order = np.argsort(-np.where(scored, raw, -np.inf), kind='stable')
        keep = np.zeros_like(scored)
        keep[order[: self.top_k]] = True
        keep &= scored
      elif self.min_probability is not None:
        keep = scored & ((raw if cal is None else cal) >= self.min_probability)
      else:
        keep = scored & calls
      labels = set(known.get(c, ())) if known is not None else None
      for i in np.flatnonzero(keep):
        out.append(Site(
          pid, int(i) + 1, seq[i], c, context(seq, int(i)), float(raw[i]),
          None if cal is None else float(cal[i]),
          None if threshold is None else int(calls[i]),
          None if labels is None else int(int(i) + 1 in labels),
        ))  # fmt: skip
    out.sort(key=lambda s: (s.position, self.channels.index(s.channel)))
    return out


class SitesTsv:
  def __init__(self, f, model: dict):
    self.f = f
    f.write(f'# ptmjax sites; model {model.get("name") or model.get("path")}; known: training '
            'label (1 site, 0 not) where the protein is a training protein, else NA\n')  # fmt: skip
    f.write('\t'.join(HEADER) + '\n')

  def protein(self, pid: str, sequence: str, sites: list[Site]) -> None:
    del pid, sequence
    self.f.write(''.join('\t'.join(s.row()) + '\n' for s in sites))

  def close(self) -> None:
    pass


def _gff_escape(value: str) -> str:
  # GFF3 reserves tab, newline, ';', '=', '&' and ',' in column 9 (percent-encoded).
  return urllib.parse.quote(str(value), safe=' :/.-_+|()[]*')


class Gff3:
  """GFF3 on protein coordinates: a `##sequence-region` per protein, a feature per site."""

  def __init__(self, f, model: dict):
    self.f = f
    f.write('##gff-version 3\n')
    f.write(f'# ptmjax predict, model {_gff_escape(model.get("name") or model.get("path"))}\n')

  def protein(self, pid: str, sequence: str, sites: list[Site]) -> None:
    seqid = _gff_escape(pid)
    lines = [f'##sequence-region {seqid} 1 {len(sequence)}\n']
    for s in sites:
      attrs = {
        'ID': f'{pid}_{s.residue}{s.position}_{s.channel}',
        'Name': f'{s.channel} {s.residue}{s.position}',
        'channel': s.channel,
        'context': s.context,
        'probability': f'{s.probability:.4f}',
      }
      if s.calibrated is not None:
        attrs['calibrated'] = f'{s.calibrated:.4f}'
      if s.call is not None:
        attrs['call'] = str(s.call)
      if s.known is not None:
        attrs['known'] = str(s.known)
      col9 = ';'.join(f'{k}={_gff_escape(v)}' for k, v in attrs.items())
      score = f'{s.calibrated if s.calibrated is not None else s.probability:.4f}'
      lines.append(
        '\t'.join(
          [seqid, 'ptmjax', GFF_TYPE, str(s.position), str(s.position), score, '.', '.', col9]
        )
        + '\n'  # fmt: skip
      )
    self.f.write(''.join(lines))

  def close(self) -> None:
    pass


class Json:
  """One JSON document, written protein by protein (the proteins list is streamed)."""

  def __init__(self, f, model: dict):
    self.f = f
    self.first = True
    head = json.dumps({'format': 'ptmjax-sites/1', 'model': model})
    f.write(head[:-1] + ', "proteins": [\n')

  def protein(self, pid: str, sequence: str, sites: list[Site]) -> None:
    record = {
      'id': pid,
      'length': len(sequence),
      'sites': [{k: v for k, v in dataclasses.asdict(s).items() if k != 'protein'} for s in sites],
    }
    self.f.write(('' if self.first else ',\n') + json.dumps(record))
    self.first = False

  def close(self) -> None:
    self.f.write('\n]}\n')


WRITERS = {'sites': SitesTsv, 'gff3': Gff3, 'json': Json}


def model_summary(meta: dict, path, channels) -> dict:
  """What an output says of the model that made it."""
  info = meta.get('info', {})
  return {
    'name': info.get('name', ''),
    'path': str(path),
    'channels': list(channels),
    'thresholds': {c: info.get('thresholds', {}).get(c) for c in channels},
    'calibrated': sorted(info.get('calibration') or {}),
    'params_sha256': meta.get('params_sha256', ''),
  }
