"""A static HTML report of a prediction: `index.html` and one page per protein.

    ptmjax predict --fasta x.fasta --out sites.tsv --format sites --report report/

Each protein page has a residue track per channel (an SVG: one bar per candidate
residue, its height the calibrated probability where the model stores a calibration,
else the raw one; the channel's stored threshold as a dashed line; the training label's
sites, where the protein is a training protein, as triangles above the track) and the
table of its sites. The index lists every protein with its called sites per channel.
Plain HTML and inline SVG, no scripts and no server: it opens from disk and archives
with the results. Pages are written as proteins are predicted (streamed, as the other
outputs); the index when the last one is done.
"""

from __future__ import annotations

import html
import pathlib
import re

import numpy as np

from ptmjax.data.records import atomic_output
from ptmjax.evaluation import calibration
from ptmjax.sites import HEADER, Site, sequence_key

COLOURS = {
  'phosphorylation': '#1f77b4',
  'ubiquitination': '#d62728',
  'acetylation': '#2ca02c',
  'succinylation': '#9467bd',
}
TRACK_HEIGHT = 80
PX_PER_RESIDUE = 2.0
MIN_WIDTH = 600

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
th { background: #f2f2f2; }
td.context { font-family: monospace; }
.track { display: block; border: 1px solid #ddd; }
/* a long protein scrolls sideways inside its row, 2 px per residue, never squeezed */
.scroll { overflow-x: auto; margin: 0.3em 0 1em 0; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
.called { font-weight: bold; }
"""


def page_name(pid: str, index: int) -> str:
  """A file name for a protein id (ids may hold '|' and other characters a path cannot)."""
  safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', pid)[:80]
  return f'{index:05d}_{safe}.html'


class HtmlReport:
  """Writes a page per protein as `protein` is called, the index on `close`."""

  def __init__(self, out_dir, meta: dict, channels, model: dict, known: dict | None = None):
    self.dir = pathlib.Path(out_dir)
    self.dir.mkdir(parents=True, exist_ok=True)
    info = meta.get('info', {})
    self.channels = list(channels)
    self.thresholds = info.get('thresholds') or {}
    self.calibration = info.get('calibration') or {}
    self.model = model
    self.known = known or {}
    self.rows: list[tuple] = []

  def protein(self, pid: str, sequence: str, probs: np.ndarray, sites: list[Site]) -> None:
    seq = sequence.upper()
    name = page_name(pid, len(self.rows))
    known = self.known.get(sequence_key(seq))
    tracks = [self._track(pid, seq, probs[:, j], c, known) for j, c in enumerate(self.channels)]
    counts = {c: sum(1 for s in sites if s.channel == c and s.call) for c in self.channels}
    drawn = (
      "triangles: sites in the model's training labels (this is a training protein)."
      if known is not None
      else 'not a training protein, so no known sites are drawn.'
    )
    body = [
      f'<h1>{html.escape(pid)}</h1>',
      f'<p class="note">{len(seq)} residues; model {html.escape(self._model_name())}. '
      'Bars: candidate residues, their height the calibrated probability (how often such a '
      'prediction was a site on validation) where the model stores a calibration, else the '
      f'raw probability; dashed line: the stored threshold a call needs; {drawn}</p>',
      *tracks,
      '<h2>Sites</h2>',
      self._table(sites),
      '<p><a href="index.html">all proteins</a></p>',
    ]
    self._write(name, pid, body)
    self.rows.append((pid, name, len(seq), counts, known is not None))

  def close(self) -> None:
    head = ''.join(f'<th>{html.escape(c)} calls</th>' for c in self.channels)
    rows = []
    for pid, name, length, counts, is_known in self.rows:
      cells = ''.join(f'<td>{counts[c]}</td>' for c in self.channels)
      rows.append(
        f'<tr><td><a href="{name}">{html.escape(pid)}</a></td><td>{length}</td>{cells}'
        f'<td>{"yes" if is_known else ""}</td></tr>'
      )
    thresholds = ', '.join(
      f'{c} {self.thresholds[c]:.3f}' for c in self.channels if c in self.thresholds
    )
    body = [
      '<h1>ptmjax predictions</h1>',
      f'<p class="note">{len(self.rows)} proteins; model {html.escape(self._model_name())}; '
      f'stored thresholds (raw probability): {html.escape(thresholds or "none")}.</p>',
      f'<table id="proteins"><tr><th>protein</th><th>length</th>{head}'
      f'<th>training protein</th></tr>',
      *rows,
      '</table>',
    ]
    self._write('index.html', 'ptmjax predictions', body)

  def _model_name(self) -> str:
    return self.model.get('name') or self.model.get('path') or '?'

  def _scale(self, channel: str, values):
    if channel in self.calibration:
      return calibration.apply_platt(np.asarray(values, np.float64), *self.calibration[channel])
    return np.asarray(values, np.float64)

  def _track(self, pid: str, seq: str, raw: np.ndarray, channel: str, known) -> str:
    n = len(seq)
    width = max(MIN_WIDTH, n * PX_PER_RESIDUE)
    dx = width / max(n, 1)
    top = 14  # room for the known-site triangles
    h = TRACK_HEIGHT
    colour = COLOURS.get(channel, '#555')
    shown = self._scale(channel, np.nan_to_num(raw, nan=0.0))
    parts = [
      '<div class="scroll">',
      f'<svg class="track" data-channel="{channel}" width="{width:.0f}" height="{h + top + 16}" '
      f'viewBox="0 0 {width:.0f} {h + top + 16}" xmlns="http://www.w3.org/2000/svg" '
      f'role="img" aria-label="{html.escape(channel)} probabilities along {html.escape(pid)}">',
      f'<text x="2" y="11" font-size="11">{html.escape(channel)}</text>',
      f'<line x1="0" y1="{top + h}" x2="{width:.0f}" y2="{top + h}" stroke="#999"/>',
    ]
    for i in np.flatnonzero(~np.isnan(raw)):
      bar = max(1.0, float(shown[i]) * h)
      parts.append(
        f'<rect class="candidate" data-position="{i + 1}" x="{i * dx:.2f}" '
        f'y="{top + h - bar:.2f}" width="{max(dx, 1.0):.2f}" height="{bar:.2f}" '
        f'fill="{colour}"><title>{seq[i]}{i + 1} {channel}: {shown[i]:.3f}</title></rect>'
      )
    if channel in self.thresholds:
      t = float(self._scale(channel, [self.thresholds[channel]])[0])
      y = top + h - t * h
      parts.append(
        f'<line class="threshold" x1="0" y1="{y:.2f}" x2="{width:.0f}" y2="{y:.2f}" '
        f'stroke="#000" stroke-dasharray="4 3"><title>threshold {t:.3f}</title></line>'
      )
    for pos in (known or {}).get(channel, ()):
      x = (pos - 0.5) * dx
      parts.append(
        f'<polygon class="known" data-position="{pos}" points="{x - 4:.2f},2 {x + 4:.2f},2 '
        f'{x:.2f},{top - 2}" fill="#ff7f0e"><title>known {channel} site '
        f'{seq[pos - 1] if pos <= n else "?"}{pos}</title></polygon>'
      )
    for tick in range(0, n + 1, 100 if n > 300 else 50):
      parts.append(
        f'<text x="{max(tick * dx, 0):.1f}" y="{top + h + 13}" font-size="10">{tick or 1}</text>'
      )
    parts.append('</svg></div>')
    return '\n'.join(parts)

  def _table(self, sites: list[Site]) -> str:
    if not sites:
      return '<p class="note">No site reaches the selection (the stored thresholds, or '
      '--min-probability / --top-k).</p>'
    head = ''.join(f'<th>{h}</th>' for h in HEADER[1:])
    rows = []
    for s in sites:
      cells = s.row()[1:]
      tds = ''.join(
        f'<td class="context">{html.escape(v)}</td>' if HEADER[k + 1] == 'context'
        else f'<td>{html.escape(v)}</td>'
        for k, v in enumerate(cells)
      )  # fmt: skip
      cls = ' class="called"' if s.call else ''
      rows.append(f'<tr{cls}>{tds}</tr>')
    return f'<table class="sites"><tr>{head}</tr>' + ''.join(rows) + '</table>'

  def _write(self, name: str, title: str, body: list[str]) -> None:
    text = (
      '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
      f'<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n'
      + '\n'.join(body)
      + '\n</body></html>\n'
    )
    with atomic_output(self.dir / name) as f:  # a full disk leaves no half page
      f.write(text)
