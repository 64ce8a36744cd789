"""The training loop, read top to bottom: `train` checks the work dir, `_train` builds the
run's inputs, state and step, loops, and writes the final model.

    ptmjax train --config yaam:tiny --workdir runs/yaam_tiny

Same code on one CPU, 8 fake CPU devices, a GPU or a TPU pod slice: the mesh
and the logical-axis rules come from the config. Every host runs the same
command; `jax.distributed.initialize()` is called when asked for
(`config.distributed` or the CLI's --coordinator flags).

What it calls, each a small module of its own: `ptmjax.run_dir` (the work dir's files),
`training.identity` (may this work dir be reused), `training.loss_spec` (the loss as a
value), `training.state` (the sharded state, init_from, the checkpoints),
`training.policies` (when to log / evaluate / save, the best step and patience),
`training.steps` (the jitted step), `evaluation.scoring` (validation) and
`training.export` (the final model folder).
"""

from __future__ import annotations

import dataclasses
import logging
import signal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from ptmjax import checkpoint as ckpt
from ptmjax import paths
from ptmjax import sharding as shd
from ptmjax.data import pipeline, ptm_types, sources
from ptmjax.data.candidates import Candidates
from ptmjax.errors import Preempted, UsageError
from ptmjax.evaluation import scoring
from ptmjax.run_dir import RunDir
from ptmjax.training import optimizer
from ptmjax.training.export import export_final
from ptmjax.training.identity import check_identity, check_resumable, finished_result
from ptmjax.training.loss_spec import LossSpec, channel_loss_weights, channels_and_weights
from ptmjax.training.metric_writer import MetricWriter
from ptmjax.training.policies import BestTracker, LogWindow, itstime
from ptmjax.training.state import Checkpoints, TrainState
from ptmjax.training.steps import make_train_step

log = logging.getLogger(__name__)

# Kept importable from here: the names the CLI and older scripts use.
__all__ = ['Preempted', 'PreemptionNotice', 'finished_result', 'train']


def train(config, workdir) -> dict:
  """Trains per `config` in `workdir`; returns the last evaluation metrics.

  Re-running a finished run (its `final/` written at the last step by this same
  config) changes nothing and returns the stored metrics.
  """
  # Local paths or gs:// URLs (an etils.epath.Path: Orbax, TFDS and tensorboardX take them).
  paths.require_supported(config.data.get('data_dir'), 'data.data_dir')
  paths.require_supported(config.init_from.get('path'), 'init_from.path')
  rd = RunDir.at(workdir)
  if config.optim.total_steps < 1:
    raise UsageError(f'optim.total_steps is {config.optim.total_steps}: nothing to train')
  check_identity(config, rd)
  done = finished_result(config, rd)
  if done is not None:
    log.info('%s: finished already (step %d); nothing to do', rd.root, config.optim.total_steps)
    return done
  check_resumable(config, rd)
  rd.root.mkdir(parents=True, exist_ok=True)
  with rd.lock(jax.process_index() == 0):
    return _train(config, rd)


@dataclasses.dataclass
class RunInputs:
  """What a run trains on and how its loss counts it (run_info.json records it)."""

  train_source: list
  data_info: dict
  candidates: Candidates
  model_cfg: object
  tokenizer: object
  channels: list
  loss: LossSpec
  outside: dict

  @classmethod
  def from_config(cls, config) -> RunInputs:
    train_source, data_info = sources.training_examples(config.data)
    candidates = Candidates.from_config(config.data.candidates, train_source)
    model_cfg, tokenizer = ckpt.model_and_tokenizer(config)
    channels, pos_weight, outside = channels_and_weights(config, train_source, candidates)
    channel_mask = channel_loss_weights(config, channels)
    outside = {c: n for c, n in outside.items() if c in channels}
    if outside:
      log.info("training sites outside their channel's candidates (not trained on): %s",
               ', '.join(f'{c} {n}' for c, n in outside.items()))  # fmt: skip
    spec = LossSpec.from_config(config, tokenizer, candidates, pos_weight, channel_mask)
    return cls(train_source, data_info, candidates, model_cfg, tokenizer, channels, spec, outside)

  def run_info(self) -> dict:
    names = ptm_types.PTM_NAMES
    return {
      'data': self.data_info,
      'channels': self.channels,
      'candidates': self.candidates.to_json(),
      'sites_outside_candidates': self.outside,
      'pos_weight': dict(zip(names, map(float, self.loss.pos_weight), strict=True)),
      'channel_weights': {
        n: float(w) for n, w in zip(names, self.loss.channel_mask, strict=True) if w
      },
      'model': self.model_cfg.to_dict(),
    }

  def evaluate(self, model, examples, max_len) -> tuple[dict, dict]:
    """(metrics, best-F1 thresholds) of `model` on the validation `examples`."""
    return scoring.evaluate(model, self.tokenizer, examples, self.candidates, self.channels,
                            max_len=max_len)  # fmt: skip

  def batches(self, config) -> pipeline.Iterator:
    return pipeline.Iterator(
      pipeline.Pipeline(
        self.train_source,
        self.tokenizer,
        batch_size=config.data.batch_size,
        max_len=config.data.max_len,
        mode=config.data.mode,
        seed=config.seed,
        crop=config.data.get('crop', 'random'),
        max_segments=config.data.max_segments,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
      )
    )


def eval_examples(config) -> list:
  """The validation proteins evaluated during training (none when `eval.every_steps` is 0)."""
  if not config.eval.every_steps:
    return []
  src = sources.examples(config.data, sources.main_spec(config.data, config.data.eval_split))
  return src[: min(len(src), config.eval.max_proteins or len(src))]


def make_mesh_and_batch_sharding(config):
  num_devices = config.sharding.get('num_devices', 0)
  mesh = shd.make_mesh(
    dict(config.sharding.mesh), jax.devices()[:num_devices] if num_devices else None
  )
  batch_axes = tuple(a for a in ('data', 'fsdp') if a in mesh.axis_names)
  if config.data.batch_size % np.prod([mesh.shape[a] for a in batch_axes]):
    raise UsageError(
      f'batch_size {config.data.batch_size} not divisible by the {batch_axes} mesh axes'
    )
  return mesh, jax.sharding.NamedSharding(mesh, shd.P(batch_axes))


def _train(config, rd: RunDir) -> dict:
  is_main = jax.process_index() == 0
  total = config.optim.total_steps
  if is_main:
    rd.config.write_text(config.to_json_best_effort(indent=2) + '\n')

  # ---- Data, loss, model state --------------------------------------------------------
  inputs = RunInputs.from_config(config)
  if is_main:
    rd.write_json(rd.run_info, inputs.run_info())
  data_iter = inputs.batches(config)
  evals = eval_examples(config)
  mesh, batch_sharding = make_mesh_and_batch_sharding(config)
  ts = TrainState.create(config, inputs.model_cfg, mesh)
  checkpoints = Checkpoints(config, rd, ts)
  tracker = BestTracker.from_config(config)
  start_step = resume(config, ts, checkpoints, data_iter, tracker)

  # ---- The step -----------------------------------------------------------------------
  train_step = jit_train_step(ts, inputs, batch_sharding)

  def data_state():  # what a checkpoint stores besides the weights
    return {**data_iter.state, 'tracker': tracker.state()}

  # ---- Loop ---------------------------------------------------------------------------
  if is_main:
    rd.drop_rows_after(start_step)
  writer = MetricWriter(rd, is_main)
  checkpoints.before_save = writer.flush
  sched = optimizer.schedule(config.optim)
  preemption = PreemptionNotice()
  bar = tqdm(total=total, initial=start_step, desc='train',
             disable=not is_main or not config.get('progress', True))  # fmt: skip
  window = LogWindow()
  evaluation: tuple[dict, dict] = ({}, {})
  stopped_early = tracker.should_stop(start_step)  # resumed after a patience stop
  if evals and start_step == 0:
    writer.write(0, scoring.baseline_metrics(inputs.train_source, evals, inputs.candidates,
                                             inputs.channels))  # fmt: skip
  try:
    with jax.set_mesh(mesh), preemption:
      for step in range(start_step + 1, total + 1):
        if stopped_early:  # resumed after the patience stop, before final/ was written
          break
        local = next(data_iter)
        ts.state, aux = train_step(ts.state, local, step)
        loss = float(aux['loss'])
        if not np.isfinite(loss):
          raise FloatingPointError(f'loss is {loss} at step {step}; stopping (last good '
                                   f'checkpoint: {checkpoints.latest_step()})')  # fmt: skip
        window.add(local, loss, int(aux['residues']))
        bar.update(1)
        if itstime(step, config.log_every_steps, total):
          row = log_row(window, step, sched, aux, data_iter.epoch)
          writer.write(step, row)
          bar.set_postfix(loss=f'{row["loss"]:.4f}', res_s=f'{row["residues_per_s"]:,.0f}')
        if evals and itstime(step, config.eval.every_steps, total):
          evaluation = inputs.evaluate(ts.model(), evals, config.data.max_len)
          writer.write(step, evaluation[0])
          tracker.update(step, *evaluation)
          stopped_early = tracker.should_stop(step)
          if stopped_early:
            log.info('%s: stopping at step %d: %s', rd.root, step, tracker.describe())
          checkpoints.on_eval(step, ts.state, data_state(), evaluation[0])
          if is_main:
            rd.write_json(rd.thresholds, evaluation[1])
        checkpoints.on_step(step, ts.state, data_state(), force=stopped_early)
        signum = preemption.reached(step)
        if signum is not None:
          checkpoints.on_step(step, ts.state, data_state(), force=True)
          checkpoints.latest.wait_until_finished()
          raise Preempted(f'signal {signum} at step {step}; checkpoint saved, re-run to resume',
                          signum)  # fmt: skip
  finally:
    bar.close()
    writer.close()
    checkpoints.wait()

  # ---- Final model folder -------------------------------------------------------------
  return export_final(config, rd, ts, checkpoints, tracker, evaluation,
                      stopped_early=stopped_early, tokenizer=inputs.tokenizer,
                      candidates=inputs.candidates, channels=inputs.channels,
                      eval_examples=evals, is_main=is_main)  # fmt: skip


def jit_train_step(ts: TrainState, inputs: RunInputs, batch_sharding):
  """`(state, local batch, step) -> (state, aux)`: the jitted step (`steps.make_train_step`)
  with the state donated and kept on its shardings, each process's batch rows assembled
  into one global array."""
  step_fn = jax.jit(
    make_train_step(ts.graphdef, inputs.loss, inputs.tokenizer, wrt=ts.wrt),
    in_shardings=(ts.sharding, batch_sharding, None),
    out_shardings=(ts.sharding, None),
    donate_argnums=0,
  )

  def train_step(state, local: dict, step: int):
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}
    return step_fn(state, batch, jnp.int32(step))

  return train_step


def resume(config, ts: TrainState, checkpoints: Checkpoints, data_iter, tracker) -> int:
  """The step to start from. Resume order: the run's own latest readable checkpoint
  (weights, optimizer, data position, best tracker) > `init_from` (parameters only) >
  the fresh initialisation."""
  restored = checkpoints.restore_latest()
  if restored is None:
    if config.init_from.get('path'):
      ts.load_init_from(config)
    return 0
  step, items = restored
  ts.restore_tree(items['state'])
  data_iter.restore(items['data'])
  tracker.load(items['data'].get('tracker', {}))
  log.info('resumed from step %d (%s)', step, data_iter.state)
  return step


def log_row(window: LogWindow, step: int, sched, aux: dict, epoch: int) -> dict:
  """One logged row of metrics.jsonl: the window's mean loss and throughput, the
  learning rate of `step`, the last step's gradient norm and head losses."""
  w = window.summary()
  row = {
    'loss': w['loss'],
    'lr': float(sched(step - 1)),
    'grad_norm': float(aux['grad_norm']),
    'residues_per_s': w['residues_per_s'],
    'real_token_share': w['real_token_share'],
    'epoch': epoch,
  }
  for k in ('ptm_loss', 'count_loss', 'mlm_loss'):
    if k in aux:
      row[k] = float(aux[k])
  return row


class PreemptionNotice:
  """When to stop for a preemption, checked once per step.

  One process: Python handlers for SIGTERM and SIGINT (Ctrl-C checkpoints like a
  preemption). Several processes: JAX's preemption sync point. The coordination
  service hears SIGTERM on any host and every host agrees on the next step at which to
  save; a per-host handler stopped only the signalled host while the others hung in
  their next collective. (Ctrl-C there is Python's KeyboardInterrupt: no checkpoint.)
  """

  def __init__(self):
    self.multi = jax.process_count() > 1
    self.signum = None
    self.previous = {}

  def __enter__(self):
    if not self.multi:
      for s in (signal.SIGTERM, signal.SIGINT):
        self.previous[s] = signal.signal(s, self._on_signal)
    return self

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)

  def _on_signal(self, signum, frame):
    del frame
    self.signum = signum

  def reached(self, step: int) -> int | None:
    """The signal to stop for at `step` (every process calls this at every step)."""
    if self.multi:
      return signal.SIGTERM if multihost_utils.reached_preemption_sync_point(step) else None
    return self.signum
