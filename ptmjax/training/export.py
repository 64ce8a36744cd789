"""The run's final model folder (`WORKDIR/final`): the weights of the last or the best
step, LoRA merged into the kernels, per-channel calibration fitted on validation, and the
description a later stage, `predict` and a user's own code read (`ptmjax.checkpoint`)."""

from __future__ import annotations

import json
import logging

from ptmjax import checkpoint as ckpt
from ptmjax.evaluation import calibration as calib
from ptmjax.evaluation import scoring
from ptmjax.models import lora
from ptmjax.run_dir import RunDir
from ptmjax.training.policies import BestTracker
from ptmjax.training.state import Checkpoints, TrainState

log = logging.getLogger(__name__)


def export_final(
  config,
  run_dir: RunDir,
  ts: TrainState,
  checkpoints: Checkpoints,
  tracker: BestTracker,
  evaluation: tuple[dict, dict],
  *,
  stopped_early: bool,
  tokenizer,
  candidates,
  channels,
  eval_examples,
  is_main: bool,
) -> dict:
  """Writes `final/` and returns the metrics it records.

  evaluation: (metrics, thresholds) of the last evaluation; with `checkpoint.final=best`
    the best evaluation's weights, metrics and thresholds replace them.
  """
  last_eval, thresholds = evaluation
  last_step = checkpoints.latest_step() or config.optim.total_steps
  final_step = last_step
  if config.checkpoint.get('final', 'last') == 'best' and tracker.best is not None:
    # The best evaluation's weights: what the next stage and `predict` use.
    final_step = tracker.best_step
    if final_step != last_step:
      ts.restore_tree(checkpoints.restore_best(final_step)['state'])
    last_eval, thresholds = tracker.metrics, tracker.thresholds
    if is_main:
      run_dir.write_json(run_dir.thresholds, thresholds)
  model = ts.model()
  model.eval()
  if ts.use_lora:  # W + (alpha / r) A B: the final folder holds the plain model's parameters
    log.info('LoRA: merged %d adapters into their kernels', len(lora.merge_adapters(model)))
  calibration = {}
  if eval_examples and config.loss.ptm_weight:
    # Platt scaling per channel on the validation proteins (`ptmjax predict --calibrated`).
    flat, scores = scoring.predict_flat(
      model, tokenizer, eval_examples, max_len=config.data.max_len
    )
    calibration = calib.fit_channels(flat, scores, candidates, channels)
  ckpt.save_model(
    run_dir.final,
    model,
    tokenizer,
    {
      'config': json.loads(config.to_json_best_effort()),
      'step': final_step,
      'last_step': last_step,
      'finished': True,
      'stopped_early': stopped_early,
      'candidates': candidates.to_json(),
      'channels': channels,
      'thresholds': thresholds,  # best F1 on the validation pass of `step`
      'metrics': last_eval,
      'calibration': calibration,  # {channel: [a, b]}: sigmoid(a * logit(p) + b)
    },
  )
  return last_eval
