"""Scoring a model on whole proteins: what the trainer's evaluation and the studies share.

Proteins longer than the window run as stitched windows (`ptmjax.inference`);
metrics come from `report.channel_report`, on each channel's candidate residues.
"""

from __future__ import annotations

import jax
import numpy as np

from ptmjax import inference
from ptmjax.data import ptm_types
from ptmjax.data.sources import text
from ptmjax.evaluation import baselines, report
from ptmjax.models import PtmModel


def predict_flat(
  model: PtmModel, tokenizer, examples, *, max_len
) -> tuple[report.Flat, np.ndarray]:
  """Whole proteins (long ones by stitched windows): flat residues/labels and sigmoid scores."""
  seqs = [text(ex['sequence']) for ex in examples]
  flat = report.Flat.from_examples(seqs, [ex['labels'] for ex in examples])
  outs, _ = inference.run(model, tokenizer, seqs, outputs=('ptm',), max_len=max_len, progress=False)
  if not outs:
    return flat, np.zeros((0, ptm_types.NUM_TYPES))
  return flat, np.asarray(jax.nn.sigmoid(np.concatenate([o['ptm'] for o in outs])))


def evaluate(model: PtmModel, tokenizer, examples, candidates, channels, *, max_len, prefix='val'):
  """Per-channel metrics on candidate residues of whole proteins, plus 'any PTM' on all residues.

  Returns:
    (flat metrics dict, thresholds chosen per channel by best F1).
  """
  flat, scores = predict_flat(model, tokenizer, examples, max_len=max_len)
  return report.channel_report(flat, scores, candidates, channels, prefix=prefix)


def baseline_metrics(train_source, examples, candidates, channels, prefix='val') -> dict:
  """The residue-identity baseline on the evaluation proteins, as `{prefix}/.../baseline_*`."""
  fit = report.Flat.from_examples(
    [text(ex['sequence']) for ex in train_source], [ex['labels'] for ex in train_source]
  )
  flat = report.Flat.from_examples(
    [text(ex['sequence']) for ex in examples], [ex['labels'] for ex in examples]
  )
  scores = baselines.ResidueIdentity().fit(fit).predict(flat)
  out, _ = report.channel_report(flat, scores, candidates, channels, prefix=prefix)
  return {
    k.rsplit('/', 1)[0] + '/baseline_' + k.rsplit('/', 1)[1]: v
    for k, v in out.items()
    if k.endswith(('/auroc', '/auprc'))
  }
