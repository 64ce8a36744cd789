"""PTM-site probabilities for new proteins from a trained model folder.

    ptmjax predict --checkpoint runs/quickstart/final --fasta new.fasta --out preds.tsv

From Python:

    from ptmjax import predict
    p = predict.Predictor('runs/quickstart/final')
    probs = p.predict({'P1': 'MKSPEELRRSS'})  # {'P1': float32 [11, channels]}, NaN off-candidate

A channel scores only its candidate residues (those it was trained on, stored
with the checkpoint: S/T/Y for phosphorylation, K for acetylation, ...); other
residues get NaN in Python and `NA` in the TSV. Long proteins go through the
stitched windows of `ptmjax.inference`.
"""

from __future__ import annotations

import json

import numpy as np
import scipy.special

from ptmjax import checkpoint as ckpt
from ptmjax import inference, sites
from ptmjax.data import ptm_types
from ptmjax.data.candidates import Candidates
from ptmjax.data.records import InputError, atomic_output, prepare_output, protein_chunks
from ptmjax.errors import NonFiniteOutputError, UsageError
from ptmjax.evaluation import calibration


class Predictor:
  """A model folder loaded once; `predict` takes {id: sequence}."""

  def __init__(
    self, checkpoint, *, channels=None, dtype: str | None = None, calibrated: bool = False
  ):
    overrides = {'dtype': dtype} if dtype else {}
    self.model, self.tokenizer, self.meta = ckpt.load_model(checkpoint, **overrides)
    self.model.eval()
    info = self.meta.get('info', {})
    self.candidates = Candidates.from_json(info.get('candidates'))
    self.thresholds: dict = info.get('thresholds') or {}
    trained = info.get('channels') or [c for c in ptm_types.PTM_NAMES if self.candidates.get(c)]
    if not trained:
      raise UsageError(
        f'{checkpoint}: no trained PTM channels recorded (a converted language model has no '
        'PTM head yet; fine-tune it with `ptmjax train` first)'
      )
    unknown = sorted(set(channels or ()) - set(trained))
    if unknown:
      raise UsageError(f'channels {unknown} not trained in {checkpoint}; it has {trained}')
    self.channels = list(channels or trained)
    # Platt maps fitted on validation at the end of training (ptmjax.evaluation.calibration).
    self.calibration = {}
    if calibrated:
      stored = info.get('calibration') or {}
      missing = [c for c in self.channels if c not in stored]
      if missing:
        raise UsageError(
          f'{checkpoint}: no calibration stored for {missing} (models trained before '
          'calibration was stored, or never evaluated); drop --calibrated'
        )
      self.calibration = {c: stored[c] for c in self.channels}
    # Windows as long as the training crops: what evaluation used and the model saw.
    self.max_len = info.get('config', {}).get('data', {}).get('max_len')

  def predict(
    self, proteins: dict[str, str], *, max_len=None, stride=None, progress=False
  ) -> dict[str, np.ndarray]:
    """{id: float32 [length, len(self.channels)]} probabilities, NaN on non-candidates."""
    ids = list(proteins)
    seqs = [proteins[i].upper() for i in ids]
    outs, self.stats = inference.run(
      self.model,
      self.tokenizer,
      seqs,
      outputs=('ptm',),
      max_len=max_len or self.max_len,
      stride=stride,
      progress=progress,
    )
    cols = [ptm_types.INDEX[c] for c in self.channels]
    result = {}
    for pid, seq, out in zip(ids, seqs, outs, strict=True):
      # NumPy, not jax.nn.sigmoid: a JAX op on each protein's shape compiles once per length.
      probs = scipy.special.expit(out['ptm'][:, cols])
      for j, c in enumerate(self.channels):
        if c in self.calibration:
          probs[:, j] = calibration.apply_platt(probs[:, j], *self.calibration[c])
      probs = probs.astype(np.float32)
      if not np.isfinite(probs).all():
        # NaN here means a broken model, and NA in the TSV means "not a candidate".
        raise NonFiniteOutputError(f'protein {pid!r}: the model gave non-finite probabilities')
      scored = self.candidates.mask(np.array(list(seq)), np.arange(len(seq)))[:, cols]
      probs[~scored] = np.nan
      result[pid] = probs
    return result

  def write_tsv(self, proteins: dict[str, str], probs: dict[str, np.ndarray], out, *, calls=False):
    """One row per residue: id, 1-based position, residue, a probability per channel
    (`NA` off-candidate) and, with `calls`, 0/1 at the checkpoint's validation threshold
    for every channel that has one (channels evaluated during training)."""
    with atomic_output(out) as f:  # renamed over `out` only when complete
      self.write_header(f, calls=calls)
      self.write_rows(f, proteins, probs, calls=calls)

  def _called(self, calls):
    called = [(j, c) for j, c in enumerate(self.channels) if c in self.thresholds] if calls else []
    if calls and not called:
      raise UsageError('the checkpoint stores no thresholds (it was never evaluated); drop --calls')
    return called

  def write_header(self, f, *, calls=False) -> None:
    # Calibrated columns carry their own name: a TSV never leaves it to guess which it holds.
    names = [f'{c}_calibrated' if c in self.calibration else c for c in self.channels]
    called = self._called(calls)
    header = ['protein', 'position', 'residue', *names, *(f'{c}_call' for _, c in called)]
    f.write('\t'.join(header) + '\n')

  def write_rows(self, f, proteins: dict[str, str], probs: dict[str, np.ndarray], *, calls=False):
    called = self._called(calls)
    # Column by column with NumPy, then one join per protein: a proteome is millions
    # of rows, and a csv.writer call per row took most of `ptmjax predict`'s time.
    # (FASTA ids hold no whitespace, so nothing ever needed quoting.)
    for pid, seq in proteins.items():
      p, n = probs[pid], len(seq)
      missing = np.isnan(p)
      cols = [[pid] * n, np.arange(1, n + 1).astype(str).tolist(), list(seq.upper())]
      for j in range(p.shape[1]):
        cols.append(np.where(missing[:, j], 'NA', np.char.mod('%.4f', p[:, j])).tolist())
      for j, c in called:
        threshold = self.thresholds[c]
        if c in self.calibration:  # the same calls: the map is monotone (a > 0)
          threshold = calibration.apply_platt(np.float64(threshold), *self.calibration[c])
        call = (p[:, j] >= np.float32(threshold)).astype(int).astype(str)
        cols.append(np.where(missing[:, j], 'NA', call).tolist())
      f.write(''.join('\t'.join(row) + '\n' for row in zip(*cols, strict=True)))


def load_known(model_dir) -> dict:
  """{sequence key: {channel: [1-based positions]}} of the model's training proteins
  (`sites.KNOWN_FILE`, written with the shipped model), {} where the folder has none."""
  path = ckpt.resolve_model_dir(model_dir) / sites.KNOWN_FILE
  if not path.is_file():
    return {}
  return json.loads(path.read_text())


def predict_fasta(
  checkpoint,
  fasta,
  out,
  *,
  calls=False,
  channels=None,
  max_len=None,
  stride=None,
  progress=True,
  calibrated=False,
  fmt: str = 'tsv',
  min_probability: float | None = None,
  top_k: int | None = None,
  report=None,
):
  """Reads `fasta` (errors name file, line and record), writes `out` in `fmt` (`tsv`: a
  row per residue; `sites`, `gff3`, `json`: the called sites, `ptmjax.sites`), returns
  (inference stats, channels)."""
  if fmt not in sites.FORMATS:
    raise UsageError(f'--format {fmt!r}: choose one of {", ".join(sites.FORMATS)}')
  if fmt == 'tsv' and (min_probability is not None or top_k):
    raise UsageError('--min-probability and --top-k select sites: use --format sites, gff3 or json')
  out = prepare_output(out, inputs=(fasta, checkpoint))
  # Site formats carry raw and calibrated probabilities and the call side by side.
  p = Predictor(checkpoint, channels=channels, calibrated=calibrated and fmt == 'tsv')
  if calls and fmt == 'tsv' and not any(c in p.thresholds for c in p.channels):
    raise InputError(
      checkpoint, None, 'the model stores no thresholds (never evaluated); drop --calls'
    )
  total = inference.Stats()
  # Streamed: a chunk of proteins is read, predicted and written at a time, so memory
  # does not grow with the FASTA (a proteome never has to fit in RAM).
  known = load_known(checkpoint)
  summary = sites.model_summary(p.meta, checkpoint, p.channels)
  selector = sites.SiteSelector(
    p.meta, p.channels, min_probability=min_probability, top_k=top_k, known=known
  )
  pages = None
  if report is not None:
    from ptmjax import report_html

    # Raw probabilities go to the pages (they calibrate for display); a calibrated TSV's
    # values are mapped already, so its pages would map them twice.
    if p.calibration:
      raise UsageError('--report draws calibrated values itself: drop --calibrated')
    pages = report_html.HtmlReport(report, p.meta, p.channels, summary, known)
  with atomic_output(out) as f:
    if fmt == 'tsv':
      p.write_header(f, calls=calls)
    else:
      writer = sites.WRITERS[fmt](f, summary)
    for chunk in protein_chunks(fasta):
      proteins = dict(chunk)
      probs = p.predict(proteins, max_len=max_len, stride=stride, progress=progress)
      if fmt == 'tsv':
        p.write_rows(f, proteins, probs, calls=calls)
      for pid, seq in proteins.items():
        if fmt != 'tsv' or pages:
          found = selector.sites(pid, seq, probs[pid])
        if fmt != 'tsv':
          writer.protein(pid, seq, found)
        if pages:
          pages.protein(pid, seq, probs[pid], found)
      total += p.stats
    if fmt != 'tsv':
      writer.close()
  if pages:
    pages.close()
  p.stats = total
  return p.stats, p.channels
