"""The training loop: one readable function, in titled sections.

    ptmjax train --config yaam:tiny --workdir runs/yaam_tiny

Same code on one CPU, 8 fake CPU devices, a GPU or a TPU pod slice: the mesh
and the logical-axis rules come from the config. Every host runs the same
command; `jax.distributed.initialize()` is called when asked for
(`config.distributed` or the CLI's --coordinator flags).

This module is the loop only. What it calls: `ptmjax.data.sources` (which
proteins), `ptmjax.data.candidates` (which residues each channel scores),
`ptmjax.data.pipeline` (batches), `training.steps` (the jitted step),
`evaluation.scoring` (validation), `ptmjax.checkpoint` (init_from, model folders).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import signal
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from ptmjax import checkpoint as ckpt
from ptmjax import paths
from ptmjax import sharding as shd
from ptmjax.data import pipeline, ptm_types, sources
from ptmjax.data import tokenizer as tok
from ptmjax.data.candidates import Candidates, outside_dict
from ptmjax.errors import Preempted, UsageError, WorkdirError
from ptmjax.evaluation import calibration as calib
from ptmjax.evaluation import scoring
from ptmjax.models import ModelConfig, create_model, lora
from ptmjax.training import optimizer
from ptmjax.training.metric_writer import MetricWriter
from ptmjax.training.steps import make_train_step

log = logging.getLogger(__name__)


# --- what the config asks for ------------------------------------------------------------
INIT_FROM_KEEPS = (
  # Model settings a run may change on top of an init_from folder's config: none
  # of them changes a parameter shape the folder has (heads are re-created).
  'dtype', 'remat', 'dropout_rate', 'ptm_head', 'head_dim', 'conv_width', 'attention_dropout_rate',
)  # fmt: skip


def model_and_tokenizer(config) -> tuple[ModelConfig, tok.Tokenizer]:
  """The model config and tokenizer: the config's own, or those of `init_from.path`."""
  if config.init_from.get('path'):
    meta = ckpt.read_meta(ckpt.resolve_model_dir(config.init_from.path))
    keep = {k: v for k, v in config.model.items() if k in INIT_FROM_KEEPS}
    return ModelConfig.from_dict({**meta['model'], **keep}), ckpt.tokenizer_from_dict(
      meta['tokenizer']
    )
  tokenizer = tok.TOKENIZERS[config.model.get('tokenizer', 'esm')]()
  # The vocabulary and special ids are the tokenizer's, whatever the config's defaults say.
  ids = dict(
    vocab_size=tokenizer.vocab_size,
    pad_id=tokenizer.pad_id,
    cls_id=tokenizer.cls_id,
    eos_id=-1 if tokenizer.eos_id is None else tokenizer.eos_id,
    mask_id=tokenizer.mask_id,
  )
  fields = {k: v for k, v in config.model.items() if k != 'tokenizer'}
  return ModelConfig.from_dict({**fields, **ids}), tokenizer


def channel_loss_weights(config, channels) -> np.ndarray:
  """float [NUM_TYPES]: the loss weight of each channel, 0 for channels not trained.

  `loss.channel_weights` ('phosphorylation=2,acetylation=0.5'; others 1) moves the
  loss towards the channels a study reports instead of those with most candidates."""
  w = np.isin(np.array(ptm_types.PTM_NAMES), channels).astype(np.float32)
  spec = config.loss.get('channel_weights') or ''
  pairs = spec.items() if isinstance(spec, dict) else (kv.split('=') for kv in spec.split(','))
  for kv in pairs:
    kv = tuple(kv)
    if kv == ('',):
      continue
    if len(kv) != 2 or kv[0].strip() not in ptm_types.INDEX:
      raise UsageError(
        f'loss.channel_weights {spec!r}: expected channel=WEIGHT[,...] with channels from '
        f'{ptm_types.PTM_NAMES}'
      )
    w[ptm_types.INDEX[kv[0].strip()]] *= float(kv[1])
  return w


def channels_and_weights(config, train_source, candidates: Candidates):
  """The channels trained (only those with both classes in the training data), the
  positive-class weight per channel ('auto': negatives / positives, capped), and
  {channel: training sites outside its candidates} (never trained on)."""
  channels = list(config.loss.channels or ptm_types.PTM_NAMES)
  pos_weight = config.loss.pos_weight
  outside = {}
  if config.loss.ptm_weight or config.loss.count_weight:
    pos, neg, out = candidates.site_counts(train_source)
    outside = outside_dict(out)
    channels = [c for c in channels if pos[ptm_types.INDEX[c]] and neg[ptm_types.INDEX[c]]]
  if pos_weight == 'auto' and not config.loss.ptm_weight:
    pos_weight = 1.0  # no PTM loss: nothing to weigh
  elif isinstance(pos_weight, str) and pos_weight != 'auto':
    pos_weight = float(pos_weight)  # '5' from the command line
  if pos_weight == 'auto':
    pos_weight = np.minimum(neg / np.maximum(pos, 1), config.loss.max_pos_weight).astype(np.float32)
  pos_weight = np.broadcast_to(np.asarray(pos_weight, np.float32), (ptm_types.NUM_TYPES,))
  return channels, pos_weight, outside


# --- the loop --------------------------------------------------------------------------
def finished_result(config, workdir) -> dict | None:
  """The stored metrics when `workdir/final` is this config's finished run, else None."""
  final = paths.as_path(workdir, 'work dir') / 'final'
  if not (final / ckpt.MODEL_FILE).is_file():
    return None
  info = ckpt.read_meta(final).get('info', {})
  stored = info.get('config')
  new = json.loads(config.to_json_best_effort())
  # The same run when no setting that changes results differs (`identity_changes`).
  same = isinstance(stored, dict) and not identity_changes(stored, new)
  # 'finished' marks runs that stopped early (patience) or keep their best step.
  done = info.get('finished') or info.get('step') == config.optim.total_steps
  return info.get('metrics', {}) if same and done else None


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def drop_rows_after(path: pathlib.Path, step: int) -> None:
  """Keeps the metrics rows up to the step a run resumes from: rows a killed run logged
  after its last checkpoint are logged again when those steps are re-run."""
  if not path.is_file():
    return
  lines = path.read_text().splitlines(keepends=True)
  keep = [x for x in lines if x.strip() and json.loads(x).get('step', 0) <= step]
  if len(keep) != len(lines):
    if paths.is_remote(path):  # an object is replaced whole by one write
      path.write_text(''.join(keep))
    else:
      tmp = path.with_suffix('.tmp')
      tmp.write_text(''.join(keep))
      tmp.replace(path)
    log.info('metrics.jsonl: dropped %d rows past step %d', len(lines) - len(keep), step)


def restore_newest_readable(candidates, args, ckpt_dir):
  """(step, restored) from the first readable of `candidates` [(manager, step)]: the latest
  checkpoint, else the best ones, newest first. A truncated latest checkpoint (a full
  disk, a copy cut short) used to end the run with no way back."""
  failures = []
  for manager, step in candidates:
    try:
      return step, manager.restore(step, args=args)
    except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise bare Exceptions
      first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
      failures.append(f'{str(manager.directory).rstrip("/").rsplit("/", 1)[-1]}/{step}: {first}')
      log.warning('checkpoint %s/%d is unreadable (%s); trying an older one',
                  manager.directory, step, first)  # fmt: skip
  raise WorkdirError(
    f'{ckpt_dir}: no readable checkpoint ({"; ".join(failures)}); delete the work dir to start over'
  )


# Settings that change neither what is trained nor what is selected: a run may resume
# or be re-run with other values (where to log, how often to save, which devices).
IDENTITY_FREE = (
  'progress',
  'log_every_steps',
  'checkpoint.every_steps',
  'checkpoint.keep_best',
  'data.data_dir',
  'sharding.',
)


def identity_changes(stored: dict, new: dict) -> list[str]:
  """Keys of a run's resolved config that differ between `stored` and `new` (nested
  dicts) and change its result. Keys only one side has are settings added or removed
  since the run started (their defaults are the old behaviour): not a change."""
  a, b = _flatten(stored), _flatten(new)
  # LoRA off (rank 0, or a config from before the section) is one setting; on, its
  # rank counts even against a config that has no section.
  lora_on = bool(a.get('lora.rank') or b.get('lora.rank'))
  keys = {
    k
    for k in set(a) & set(b)
    if a[k] != b[k] and not k.startswith(IDENTITY_FREE) and (lora_on or not k.startswith('lora.'))
  }
  if lora_on and a.get('lora.rank', 0) != b.get('lora.rank', 0):
    keys.add('lora.rank')
  return sorted(keys)


def check_identity(config, workdir) -> None:
  """Refuses to reuse a finished or partial run trained with other settings (issue 28:
  a re-run with another lr resumed, trained 0 steps and rewrote `final/` and
  config.json to claim the new settings over the old weights)."""
  workdir = paths.as_path(workdir, 'work dir')
  stored_file = workdir / 'config.json'
  if not stored_file.is_file():
    return
  stored = json.loads(stored_file.read_text())
  keys = identity_changes(stored, json.loads(config.to_json_best_effort()))
  if 'init_from.path' in keys and _same_start(stored['init_from']['path'], config.init_from.path):
    keys.remove('init_from.path')  # the same weights under another path (a moved study)
  if keys:
    a, b = _flatten(stored), _flatten(json.loads(config.to_json_best_effort()))
    diffs = ', '.join(f'{k}: {a[k]!r} -> {b[k]!r}' for k in keys[:6])
    more = f' and {len(keys) - 6} more' if len(keys) > 6 else ''
    raise WorkdirError(
      f'{workdir} holds a run trained with other settings ({diffs}{more}); use a new '
      '--workdir or the settings it was trained with (`ptmjax train --restart` moves an old '
      'run aside and starts again)'
    )


def _same_start(old: str, new: str) -> bool:
  """Whether two init_from paths hold the same weights: by their parameter checksums, or
  the old path no longer exists (the study folder was moved) and the new one is there."""
  try:
    new_meta = ckpt.read_meta(ckpt.resolve_model_dir(new)) if new else {}
  except (FileNotFoundError, ValueError):
    return False
  if not old or not new:
    return False
  try:
    old_meta = ckpt.read_meta(ckpt.resolve_model_dir(old))
  except FileNotFoundError:
    return True
  except ValueError:
    return False
  return bool(new_meta.get('params_sha256')) and (
    old_meta.get('params_sha256') == new_meta.get('params_sha256')
  )


def move_aside(workdir) -> pathlib.Path | None:
  """`--restart`: renames an existing work dir to WORKDIR.replaced-<time> (never deletes)."""
  workdir = paths.as_path(workdir, 'work dir')
  if not workdir.exists():
    return None
  target = workdir.parent / f'{workdir.name}.replaced-{time.strftime("%Y%m%d-%H%M%S")}'
  workdir.rename(target)
  log.warning('%s: the earlier run moved to %s', workdir, target)
  return target


def check_resumable(config, workdir) -> None:
  """Refuses, before anything is written, to resume checkpoints of a different model.

  A changed `model` section (or `init_from.path`, which sets the model) would restore
  checkpoints of one shape into another; other changes (the mesh, more steps) resume.
  """
  workdir = paths.as_path(workdir, 'work dir')
  stored_file = workdir / 'config.json'
  if not stored_file.is_file() or not any((workdir / 'checkpoints').glob('*/*')):
    return
  stored = _flatten(json.loads(stored_file.read_text()))
  new = _flatten(json.loads(config.to_json_best_effort()))
  # LoRA adapters change the state's shape; without them (rank 0, or a config from before
  # the `lora` section) their other settings do not matter.
  lora_on = bool(stored.get('lora.rank') or new.get('lora.rank'))
  prefixes = ('model.', 'lora.') if lora_on else ('model.',)
  keys = sorted(
    k
    for k in set(stored) | set(new)
    if (k.startswith(prefixes) or k == 'init_from.path') and stored.get(k) != new.get(k)
  )
  if keys:
    diffs = ', '.join(f'{k}: {stored.get(k)!r} -> {new.get(k)!r}' for k in keys)
    raise WorkdirError(
      f'{workdir} holds checkpoints of a different model ({diffs}); use a new --workdir, '
      'or the settings it was started with'
    )


def _barriers(name: str) -> ocp.options.MultiprocessingOptions:
  """Barrier keys of one checkpoint manager. `best` and `latest` save the same step
  (an evaluation on a checkpoint step); with one key space their barriers
  (`_async_write_complete.<step>`) collided on several processes: "Barrier ... is
  already ongoing", one process hung and `latest/<step>` stayed a tmp directory."""
  return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


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


def train(config, workdir) -> dict:
  """Trains per `config` in `workdir`; returns the last evaluation metrics.

  Re-running a finished run (its `final/` written at the last step by this same
  config) changes nothing and returns the stored metrics.
  """
  # Local paths or gs:// URLs (an etils.epath.Path: Orbax, TFDS and tensorboardX take them).
  paths.require_supported(config.data.get('data_dir'), 'data.data_dir')
  paths.require_supported(config.init_from.get('path'), 'init_from.path')
  workdir = paths.as_path(workdir, 'work dir')
  if config.optim.total_steps < 1:
    raise UsageError(f'optim.total_steps is {config.optim.total_steps}: nothing to train')
  check_identity(config, workdir)
  done = finished_result(config, workdir)
  if done is not None:
    log.info('%s: finished already (step %d); nothing to do', workdir, config.optim.total_steps)
    return done
  check_resumable(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lock(workdir):
    return _train(config, workdir)


@contextlib.contextmanager
def workdir_lock(workdir):
  """One trainer per work dir (process 0 holds it): a second one used to interleave
  metrics.jsonl and die in Orbax. An flock, so the kernel drops it with its process:
  a crashed or killed run leaves no stale lock behind."""
  if jax.process_index() != 0:
    yield
    return
  if paths.is_remote(workdir):
    # Object stores have no advisory locks; one run per gs:// work dir is up to the user.
    log.warning('%s: not locked (object store): run one trainer per work dir', workdir)
    yield
    return
  path = pathlib.Path(workdir) / '.lock'
  f = open(path, 'a+')  # noqa: SIM115 - held open for the whole run
  try:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or 'another process'
      raise WorkdirError(
        f'{workdir} is in use by {holder}; wait for it to finish or stop it, or use '
        'another --workdir'
      ) from None
    f.seek(0)
    f.truncate()
    f.write(
      f'process {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n'
    )
    f.flush()
    yield
  finally:
    f.close()  # releases the lock


def _train(config, workdir) -> dict:
  is_main = jax.process_index() == 0
  if is_main:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')

  # ---- Data -----------------------------------------------------------------------
  train_source, data_info = sources.training_examples(config.data)
  candidates = Candidates.from_config(config.data.candidates, train_source)
  model_cfg, tokenizer = model_and_tokenizer(config)
  channels, pos_weight, outside = channels_and_weights(config, train_source, candidates)
  channel_mask = channel_loss_weights(config, channels)
  outside = {c: n for c, n in outside.items() if c in channels}
  if outside:
    log.info(
      "training sites outside their channel's candidates (not trained on): %s",
      ', '.join(f'{c} {n}' for c, n in outside.items()),
    )
  run_info = {
    'data': data_info,
    'channels': channels,
    'candidates': candidates.to_json(),
    'sites_outside_candidates': outside,
    'pos_weight': dict(zip(ptm_types.PTM_NAMES, map(float, pos_weight), strict=True)),
    'channel_weights': {
      n: float(w) for n, w in zip(ptm_types.PTM_NAMES, channel_mask, strict=True) if w
    },
    'model': model_cfg.to_dict(),
  }
  if is_main:
    (workdir / 'run_info.json').write_text(json.dumps(run_info, indent=2) + '\n')

  pipe = pipeline.Pipeline(
    train_source,
    tokenizer,
    batch_size=config.data.batch_size,
    max_len=config.data.max_len,
    mode=config.data.mode,
    seed=config.seed,
    crop=config.data.get('crop', 'random'),
    max_segments=config.data.max_segments,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  data_iter = pipeline.Iterator(pipe)
  eval_examples = []
  if config.eval.every_steps:
    src = sources.examples(config.data, sources.main_spec(config.data, config.data.eval_split))
    n = min(len(src), config.eval.max_proteins or len(src))
    eval_examples = src[:n]

  # ---- Model, optimizer and their shardings ------------------------------------------
  num_devices = config.sharding.get('num_devices', 0)
  mesh = shd.make_mesh(
    dict(config.sharding.mesh), jax.devices()[:num_devices] if num_devices else None
  )
  rules = tuple(tuple(r) for r in config.sharding.rules)

  # What the optimizer updates: every parameter, or with LoRA the adapters and the
  # parameters `lora.train` names (the rest get no optimizer state and no gradient).
  lora_cfg = config.get('lora', {})
  use_lora = bool(lora_cfg.get('rank', 0))
  if use_lora and config.optim.get('freeze'):
    raise UsageError('lora.rank and optim.freeze together: LoRA already trains only its adapters')
  wrt = lora.trainable(lora_cfg.train) if use_lora else nnx.Param

  def create_state():
    model = create_model(model_cfg, config.seed)
    if use_lora:
      rngs = nnx.Rngs(params=config.seed + 1)
      lora.add_adapters(model, lora_cfg.targets, lora_cfg.rank, lora_cfg.alpha, rngs)
    model.train()
    tx = optimizer.make_optimizer(config.optim, nnx.state(model, wrt), model_cfg.num_layers)
    return model, nnx.Optimizer(model, tx, wrt=wrt)

  abstract = nnx.eval_shape(create_state)
  graphdef, abstract_state = nnx.split(abstract)
  state_sharding = shd.state_sharding(abstract_state, mesh, rules)
  batch_axes = tuple(a for a in ('data', 'fsdp') if a in mesh.axis_names)
  batch_sharding = jax.sharding.NamedSharding(mesh, shd.P(batch_axes))
  if config.data.batch_size % np.prod([mesh.shape[a] for a in batch_axes]):
    raise UsageError(
      f'batch_size {config.data.batch_size} not divisible by the {batch_axes} mesh axes'
    )

  # ---- Load checkpoint ------------------------------------------------------------
  # Resume order: own latest checkpoint > init_from (params only) > fresh init.
  ckpt_dir = paths.absolute(workdir / 'checkpoints')
  latest = ocp.CheckpointManager(
    ckpt_dir / 'latest',
    item_handlers=ckpt.train_state_handlers(ckpt_dir),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=1, create=True, multiprocessing_options=_barriers('latest')
    ),
  )
  best_metric = config.checkpoint.best_metric
  best = ocp.CheckpointManager(
    ckpt_dir / 'best',
    item_handlers=ckpt.train_state_handlers(ckpt_dir),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=config.checkpoint.keep_best,
      best_fn=lambda m: m.get(best_metric, -np.inf),
      best_mode='max',
      create=True,
      multiprocessing_options=_barriers('best'),
    ),
  )
  with jax.set_mesh(mesh):
    state = jax.jit(lambda: nnx.split(create_state())[1], out_shardings=state_sharding)()
  start_step = 0
  # Saved as a plain nested dict (readable with Orbax alone); restored onto
  # this run's shardings, whatever the mesh that wrote it.
  # (Frozen parameters' optimizer state is an empty optax.MaskedNode: kept as it is.)
  target = jax.tree.map(
    lambda x, s: (
      x if isinstance(x, optax.MaskedNode) else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    ),
    ckpt.state_to_tree(state),
    ckpt.state_to_tree(state_sharding),
    is_leaf=lambda x: isinstance(x, optax.MaskedNode),
  )
  args = ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore())
  # The best evaluation so far and how many evaluations since (patience); saved with
  # every checkpoint so a resumed run stops where an uninterrupted one would.
  tracker = {'best': None, 'best_step': 0, 'bad': 0, 'metrics': {}, 'thresholds': {}}
  if latest.latest_step() is not None:
    start_step = latest.latest_step()
    start_step, restored = restore_newest_readable(
      [(latest, start_step)] + [(best, s) for s in sorted(best.all_steps(), reverse=True)],
      args,
      ckpt_dir,
    )
    nnx.replace_by_pure_dict(state, ckpt.state_from_tree(restored['state']))
    data_iter.restore(restored['data'])
    tracker.update(restored['data'].get('tracker', {}))
    log.info('resumed from step %d (%s)', start_step, data_iter.state)
  elif config.init_from.get('path'):
    params = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param).to_pure_dict()
    skip = tuple(config.init_from.get('skip', ())) + ((lora.ADAPTER_RE,) if use_lora else ())
    merged, taken, skipped = ckpt.init_params_from(params, config.init_from.path, skip)
    model, opt = nnx.merge(graphdef, state)
    p_state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(p_state, merged)
    nnx.update(model, p_state)
    state = jax.device_put(nnx.split((model, opt))[1], state_sharding)
    log.info(
      'init_from %s: %d parameters loaded, %d skipped',
      config.init_from.path,
      len(taken),
      len(skipped),
    )

  # ---- Steps ----------------------------------------------------------------------
  cand_table = jnp.asarray(candidates.token_table(tokenizer))
  step_fn = make_train_step(
    graphdef,
    config,
    tokenizer,
    cand_table,
    pos_weight,
    channel_mask,
    wrt=wrt,
    position_limits=candidates.position_limits() if candidates.positions else None,
  )
  train_step = jax.jit(
    step_fn,
    in_shardings=(state_sharding, batch_sharding, None),
    out_shardings=(state_sharding, None),
    donate_argnums=0,
  )

  def global_batch(local):
    return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}

  # ---- Loop -----------------------------------------------------------------------
  if is_main:
    drop_rows_after(workdir / 'metrics.jsonl', start_step)
  writer = MetricWriter(workdir, is_main)
  sched = optimizer.schedule(config.optim)
  preemption = PreemptionNotice()
  total = config.optim.total_steps
  step_delay = float(os.environ.get('PTMJAX_STEP_DELAY_S', 0))
  bar = tqdm(
    total=total,
    initial=start_step,
    disable=not is_main or not config.get('progress', True),
    desc='train',
  )
  window = {'loss': [], 'residues': 0, 'time': time.perf_counter(), 'tokens': 0, 'real': 0}
  last_eval: dict = {}
  thresholds: dict = {}

  def save(manager, step, extra_metrics=None):
    writer.flush()  # on an object store: the rows up to this checkpoint are stored with it
    manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(ckpt.state_to_tree(state)),
        data=ocp.args.JsonSave({**data_iter.state, 'tracker': tracker}),
      ),
      metrics=extra_metrics,
      force=True,
    )

  patience = config.eval.get('patience', 0)
  # Patience counts only from `eval.min_steps`: one noisy evaluation early on (200
  # proteins) must not end a run that has barely started.
  min_steps = config.eval.get('min_steps', 0)
  stopped_early = bool(patience and tracker['bad'] >= patience and start_step >= min_steps)
  if eval_examples and start_step == 0:
    writer.write(0, scoring.baseline_metrics(train_source, eval_examples, candidates, channels))
  try:
    with jax.set_mesh(mesh), preemption:
      for step in range(start_step + 1, total + 1):
        if stopped_early:  # resumed after the patience stop, before final/ was written
          break
        local = next(data_iter)
        window['tokens'] += local['tokens'].size
        window['real'] += int((local['segment_ids'] > 0).sum())
        state, aux = train_step(state, global_batch(local), jnp.int32(step))
        if step_delay:  # tests only: time to deliver a signal mid-run
          time.sleep(step_delay)
        loss = float(aux['loss'])
        if not np.isfinite(loss):
          raise FloatingPointError(
            f'loss is {loss} at step {step}; stopping (last good checkpoint: {latest.latest_step()})'
          )
        window['loss'].append(loss)
        window['residues'] += int(aux['residues'])
        bar.update(1)
        if step % config.log_every_steps == 0 or step == total:
          dt = time.perf_counter() - window['time']
          values = {
            'loss': float(np.mean(window['loss'])),
            'lr': float(sched(step - 1)),
            'grad_norm': float(aux['grad_norm']),
            'residues_per_s': window['residues'] / dt,
            'real_token_share': window['real'] / max(window['tokens'], 1),
            'epoch': data_iter.epoch,
          }
          for k in ('ptm_loss', 'count_loss', 'mlm_loss'):
            if k in aux:
              values[k] = float(aux[k])
          writer.write(step, values)
          bar.set_postfix(loss=f'{values["loss"]:.4f}', res_s=f'{values["residues_per_s"]:,.0f}')
          window = {'loss': [], 'residues': 0, 'time': time.perf_counter(), 'tokens': 0, 'real': 0}
        if eval_examples and (step % config.eval.every_steps == 0 or step == total):
          model = nnx.merge(graphdef, state)[0]
          last_eval, thresholds = scoring.evaluate(
            model, tokenizer, eval_examples, candidates, channels, max_len=config.data.max_len
          )
          writer.write(step, last_eval)
          value = last_eval.get(best_metric)
          if value is not None and (tracker['best'] is None or value > tracker['best']):
            tracker.update(best=float(value), best_step=step, bad=0)
            tracker.update(metrics={k: float(v) for k, v in last_eval.items()},
                           thresholds={k: float(v) for k, v in thresholds.items()})  # fmt: skip
          else:
            tracker['bad'] += 1
          stopped_early = bool(patience and tracker['bad'] >= patience and step >= min_steps)
          if stopped_early:
            log.info('%s: no better %s in %d evaluations (best %.4f at step %d); stopping at '
                     'step %d', workdir, best_metric, patience, tracker['best'],
                     tracker['best_step'], step)  # fmt: skip
          save(best, step, {k: float(v) for k, v in last_eval.items()})
          if is_main:
            (workdir / 'thresholds.json').write_text(json.dumps(thresholds, indent=2) + '\n')
        if step % config.checkpoint.every_steps == 0 or step == total or stopped_early:
          if latest.latest_step() != step:
            save(latest, step)
        signum = preemption.reached(step)
        if signum is not None:
          # A signal on a checkpoint step finds that step saved already: saving it again
          # raises StepAlreadyExistsError, and a requeueing wrapper sees exit 1, not 143.
          if latest.latest_step() != step:
            save(latest, step)
          latest.wait_until_finished()
          raise Preempted(
            f'signal {signum} at step {step}; checkpoint saved, re-run to resume', signum
          )
  finally:
    bar.close()
    writer.close()
    latest.wait_until_finished()
    best.wait_until_finished()

  # ---- Final model folder -----------------------------------------------------------
  last_step = latest.latest_step() or total
  final_step = last_step
  if config.checkpoint.get('final', 'last') == 'best' and tracker['best'] is not None:
    # The best evaluation's weights: what the next stage and `predict` use.
    final_step = tracker['best_step']
    if final_step != last_step:
      restored = best.restore(final_step, args=args)
      nnx.replace_by_pure_dict(state, ckpt.state_from_tree(restored['state']))
    last_eval, thresholds = tracker['metrics'], tracker['thresholds']
    if is_main:
      (workdir / 'thresholds.json').write_text(json.dumps(thresholds, indent=2) + '\n')
  model = nnx.merge(graphdef, state)[0]
  model.eval()
  if use_lora:  # W + (alpha / r) A B: the final folder holds the plain model's parameters
    log.info('LoRA: merged %d adapters into their kernels', len(lora.merge_adapters(model)))
  calibration = {}
  if eval_examples and config.loss.ptm_weight:
    # Platt scaling per channel on the validation proteins (`ptmjax predict --calibrated`).
    flat, scores = scoring.predict_flat(
      model, tokenizer, eval_examples, max_len=config.data.max_len
    )
    calibration = calib.fit_channels(flat, scores, candidates, channels)
  ckpt.save_model(
    workdir / 'final',
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
