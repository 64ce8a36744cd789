"""The training loop: one readable function, in titled sections.

    ptmjax train --config experiments/configs/yaam.py:tiny --workdir runs/yaam_tiny

Same code on one CPU, 8 fake CPU devices, a GPU or a TPU pod slice: the mesh
and the logical-axis rules come from the config. Every host runs the same
command; `jax.distributed.initialize()` is called when asked for
(`config.distributed` or the CLI's --coordinator flags).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from ptmjax import checkpoint as ckpt
from ptmjax import inference
from ptmjax import sharding as shd
from ptmjax.data import pipeline, ptm_types
from ptmjax.data import tokenizer as tok
from ptmjax.evaluation import baselines, report
from ptmjax.models import ModelConfig, PtmModel, create_model
from ptmjax.training import losses, optimizer

log = logging.getLogger(__name__)


class Preempted(Exception):
  """Raised after a SIGTERM-triggered checkpoint; re-running the command resumes."""


class MetricWriter:
  """metrics.jsonl (one object per logged step) and TensorBoard event files; process 0 only."""

  def __init__(self, workdir: pathlib.Path, enabled: bool):
    self.enabled = enabled
    if enabled:
      from tensorboardX import SummaryWriter

      self.file = open(workdir / 'metrics.jsonl', 'a')  # noqa: SIM115 - closed in close()
      self.tb = SummaryWriter(str(workdir / 'tensorboard'))

  def write(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    clean = {
      k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
      for k, v in values.items()
    }
    self.file.write(json.dumps({'step': int(step), **clean}) + '\n')
    self.file.flush()
    for k, v in clean.items():
      if isinstance(v, float) and np.isfinite(v):
        self.tb.add_scalar(k, v, step)
    self.tb.flush()

  def close(self) -> None:
    if self.enabled:
      self.file.close()
      self.tb.close()


# --- evaluation ------------------------------------------------------------------------
def predict_flat(
  model: PtmModel, tokenizer, examples, *, max_len
) -> tuple[report.Flat, np.ndarray]:
  """Whole proteins (long ones by stitched windows): flat residues/labels and sigmoid scores."""
  seqs = [pipeline._text(ex['sequence']) for ex in examples]
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
  text = pipeline._text
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


# --- the train step --------------------------------------------------------------------
def mask_tokens(rng, tokens, residue, cfg: ModelConfig, tokenizer: tok.Tokenizer, prob: float):
  """BERT masking of residue tokens: 80 % <mask>, 10 % random residue, 10 % unchanged."""
  k1, k2, k3 = jax.random.split(rng, 3)
  chosen = residue & (jax.random.uniform(k1, tokens.shape) < prob)
  u = jax.random.uniform(k2, tokens.shape)
  aa_ids = jnp.array([tokenizer.id(a) for a in 'ACDEFGHIKLMNPQRSTVWY'], jnp.int32)
  random_aa = aa_ids[jax.random.randint(k3, tokens.shape, 0, 20)]
  new = jnp.where(u < 0.8, cfg.mask_id, jnp.where(u < 0.9, random_aa, tokens))
  return jnp.where(chosen, new, tokens), chosen


def make_train_step(graphdef, config, tokenizer, cand_table, pos_weight, channel_mask):
  lc = config.loss
  heads = tuple(
    h for h, w in (('ptm', lc.ptm_weight), ('count', lc.count_weight), ('mlm', lc.mlm_weight)) if w
  )
  num_segments = config.data.max_segments if config.data.mode == 'pack' else 1
  rng0 = jax.random.key(config.seed)

  def loss_fn(model, batch, step):
    tokens, seg = batch['tokens'], batch['segment_ids']
    residue = model.residue_mask(tokens, seg)
    inputs, chosen = tokens, None
    if lc.mlm_weight:
      inputs, chosen = mask_tokens(
        jax.random.fold_in(rng0, step), tokens, residue, model.cfg, tokenizer, lc.mlm_prob
      )
    out = model(inputs, seg, batch['positions'], heads=heads, num_segments=num_segments)
    total, aux = 0.0, {}
    if lc.ptm_weight:
      weights = cand_table[tokens] & residue[..., None] & channel_mask
      loss, n = losses.ptm_loss(
        out['ptm'],
        batch['labels'],
        weights.astype(jnp.float32),
        pos_weight=pos_weight,
        label_smoothing=lc.label_smoothing,
        focal_gamma=lc.focal_gamma,
      )
      total += lc.ptm_weight * loss
      aux['ptm_loss'], aux['scored'] = loss, n
    if lc.count_weight:
      loss = losses.count_loss(out['count'], batch['counts'], batch['counts_valid'] & channel_mask)
      total += lc.count_weight * loss
      aux['count_loss'] = loss
    if lc.mlm_weight:
      loss = losses.mlm_loss(out['mlm'], tokens, chosen)
      total += lc.mlm_weight * loss
      aux['mlm_loss'] = loss
    aux['residues'] = residue.sum()
    return total, aux

  def train_step(state, batch, step):
    model, opt = nnx.merge(graphdef, state)
    (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, step)
    opt.update(model, grads)
    aux['loss'] = loss
    aux['grad_norm'] = optax_global_norm(grads)
    return nnx.state((model, opt)), aux

  return train_step


def optax_global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


# --- helpers ---------------------------------------------------------------------------
def open_dataset(data_cfg, name: str, sub: str = '') -> dict:
  """{split: random-access source} for a TFDS dataset, or 'synthetic' generated in code
  (`sub` = 'source' or 'target' picks the synthetic variant)."""
  if name == 'synthetic':
    from ptmjax.data import synthetic

    s = data_cfg.synthetic
    variant = sub or s.variant
    prefix = 'SRC' if variant == 'source' else 'SYN'
    return synthetic.splits(s.num_proteins, s.seed, variant, prefix)
  import ptmjax.data

  return ptmjax.data.load(name, data_cfg.data_dir, sub or None)


def examples(data_cfg, spec: str) -> list:
  """Examples of 'name[/config]:split[+split...]', e.g. 'ptmdb/all:train' or 'yaam:train+unlabeled'."""
  if ':' not in spec:
    raise ValueError(f"dataset spec {spec!r} must look like 'name[/config]:split'")
  full, splits = spec.rsplit(':', 1)
  name, _, sub = full.partition('/')
  d = open_dataset(data_cfg, name, sub)
  out = []
  for split in splits.split('+'):
    if split not in d:
      raise ValueError(f'{spec}: split {split!r} not in {full} ({sorted(d)})')
    out.extend(d[split][i] for i in range(len(d[split])))
  return out


def main_spec(data_cfg, split: str) -> str:
  sub = data_cfg.get('config') or ''
  if data_cfg.name == 'synthetic':
    sub = sub or data_cfg.synthetic.variant
  return f'{data_cfg.name}{"/" + sub if sub else ""}:{split}'


def training_examples(data_cfg) -> tuple[list, dict]:
  """The training split plus `data.extra` datasets, less homologs of `data.exclude_homologs_of`.

  Returns:
    (examples, info) where info counts proteins per source and those removed.
  """
  specs = [main_spec(data_cfg, data_cfg.train_split), *data_cfg.get('extra', ())]
  parts = {spec: examples(data_cfg, spec) for spec in specs}
  info = {'sources': {k: len(v) for k, v in parts.items()}}
  train = [ex for part in parts.values() for ex in part]
  exclude = data_cfg.get('exclude_homologs_of') or ''
  if exclude:
    from ptmjax.data import homology

    refs = {
      f'ref{i}': pipeline._text(ex['sequence']) for i, ex in enumerate(examples(data_cfg, exclude))
    }
    train, removed = homology.remove_homologs(train, refs)
    info['homologs_removed'] = len(removed)
    info['homologs_of'] = exclude
    log.info('removed %d training proteins homologous to %s', len(removed), exclude)
  info['proteins'] = len(train)
  return train, info


def label_stats(source, candidates) -> tuple[np.ndarray, np.ndarray]:
  """Positives and negatives per channel on candidate residues (for pos_weight='auto')."""
  pos = np.zeros(ptm_types.NUM_TYPES, np.int64)
  neg = np.zeros(ptm_types.NUM_TYPES, np.int64)
  for ex in source:
    seq = np.frombuffer(pipeline._text(ex['sequence']).encode(), 'S1').astype(str)
    labels = np.asarray(ex['labels'])
    for name, c in ptm_types.INDEX.items():
      keep = (
        np.isin(seq, list(candidates[name])) if candidates.get(name) else np.ones(len(seq), bool)
      )
      pos[c] += (labels[keep, c] == 1).sum()
      neg[c] += (labels[keep, c] == 0).sum()
  return pos, neg


def init_params_from(state_params: dict, path, skip) -> tuple[dict, list[str], list[str]]:
  """Parameters of a model folder merged into `state_params`, except paths matching `skip`."""
  path = ckpt.resolve_model_dir(path)
  ckpt.read_meta(path)
  tree = ocp.PyTreeCheckpointer().metadata(path / 'params').item_metadata.tree
  loaded = ocp.PyTreeCheckpointer().restore(
    path / 'params',
    args=ocp.args.PyTreeRestore(
      restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    ),
  )
  flat_loaded = {
    optimizer.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]
  }
  skip_re = [re.compile(s) for s in skip]
  taken, skipped = [], []

  def pick(p, current):
    name = optimizer.path_str(p)
    if any(r.fullmatch(name) for r in skip_re):
      skipped.append(name)
      return current
    if name not in flat_loaded:
      raise ValueError(f'init_from {path}: no parameter {name} (add it to skip to keep it fresh)')
    value = flat_loaded[name]
    if value.shape != current.shape:
      raise ValueError(f'init_from {path}: {name} has shape {value.shape}, model {current.shape}')
    taken.append(name)
    return jnp.asarray(value, current.dtype)

  return jax.tree_util.tree_map_with_path(pick, state_params), taken, skipped


def named(state) -> dict:
  """The (model, optimizer) state as the plain dict a checkpoint holds: {'model', 'optimizer'}."""
  pure = state.to_pure_dict()
  return {'model': pure[0], 'optimizer': pure[1]}


def unnamed(tree: dict) -> dict:
  return {0: tree['model'], 1: tree['optimizer']}


# --- the loop --------------------------------------------------------------------------
def train(config, workdir) -> dict:
  """Trains per `config` in `workdir`; returns the last evaluation metrics."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')

  # ---- Data -----------------------------------------------------------------------
  train_source, data_info = training_examples(config.data)
  candidates = config.data.candidates
  if candidates == 'auto':
    candidates = pipeline.derive_candidates(train_source)
  elif isinstance(candidates, str):  # 'phosphorylation=STY,acetylation=K'
    pairs = [kv.split('=') for kv in candidates.split(',') if kv.strip()]
    candidates = {k.strip(): v.strip().upper() for k, v in pairs}
  candidates = dict(candidates or {})
  tokenizer = tok.TOKENIZERS[config.model.get('tokenizer', 'esm')]()
  model_cfg = ModelConfig.from_dict({k: v for k, v in config.model.items() if k != 'tokenizer'})
  if config.init_from.get('path'):
    meta = ckpt.read_meta(ckpt.resolve_model_dir(config.init_from.path))
    tokenizer = ckpt.tokenizer_from_dict(meta['tokenizer'])
    keep = {
      k: v
      for k, v in config.model.items()
      if k
      in (
        'dtype',
        'remat',
        'dropout_rate',
        'ptm_head',
        'head_dim',
        'conv_width',
        'attention_dropout_rate',
      )
    }
    model_cfg = ModelConfig.from_dict({**meta['model'], **keep})
  channels = list(config.loss.channels or ptm_types.PTM_NAMES)
  pos_weight = config.loss.pos_weight
  if config.loss.ptm_weight or config.loss.count_weight:
    # Only channels with both classes in the training data are trained and reported.
    pos, neg = label_stats(train_source, candidates)
    channels = [c for c in channels if pos[ptm_types.INDEX[c]] and neg[ptm_types.INDEX[c]]]
  channel_mask = np.isin(np.array(ptm_types.PTM_NAMES), channels)
  if pos_weight == 'auto' and not config.loss.ptm_weight:
    pos_weight = 1.0  # no PTM loss: nothing to weigh
  elif isinstance(pos_weight, str) and pos_weight != 'auto':
    pos_weight = float(pos_weight)  # '5' from the command line
  if pos_weight == 'auto':
    pos_weight = np.minimum(neg / np.maximum(pos, 1), config.loss.max_pos_weight).astype(np.float32)
  pos_weight = np.broadcast_to(np.asarray(pos_weight, np.float32), (ptm_types.NUM_TYPES,))
  run_info = {
    'data': data_info,
    'channels': channels,
    'candidates': candidates,
    'pos_weight': dict(zip(ptm_types.PTM_NAMES, map(float, pos_weight), strict=True)),
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
    max_segments=config.data.max_segments,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  data_iter = pipeline.Iterator(pipe)
  eval_examples = []
  if config.eval.every_steps:
    src = examples(config.data, main_spec(config.data, config.data.eval_split))
    n = min(len(src), config.eval.max_proteins or len(src))
    eval_examples = src[:n]

  # ---- Model, optimizer and their shardings ------------------------------------------
  num_devices = config.sharding.get('num_devices', 0)
  mesh = shd.make_mesh(
    dict(config.sharding.mesh), jax.devices()[:num_devices] if num_devices else None
  )
  rules = tuple(tuple(r) for r in config.sharding.rules)

  def create_state():
    model = create_model(model_cfg, config.seed)
    model.train()
    tx = optimizer.make_optimizer(config.optim, nnx.state(model, nnx.Param), model_cfg.num_layers)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

  abstract = nnx.eval_shape(create_state)
  graphdef, abstract_state = nnx.split(abstract)
  state_sharding = shd.state_sharding(abstract_state, mesh, rules)
  batch_axes = tuple(a for a in ('data', 'fsdp') if a in mesh.axis_names)
  batch_sharding = jax.sharding.NamedSharding(mesh, shd.P(batch_axes))
  if config.data.batch_size % np.prod([mesh.shape[a] for a in batch_axes]):
    raise ValueError(
      f'batch_size {config.data.batch_size} not divisible by the {batch_axes} mesh axes'
    )

  # ---- Load checkpoint ------------------------------------------------------------
  # Resume order: own latest checkpoint > init_from (params only) > fresh init.
  ckpt_dir = (workdir / 'checkpoints').absolute()
  latest = ocp.CheckpointManager(
    ckpt_dir / 'latest',
    item_names=('state', 'data'),
    options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
  )
  best_metric = config.checkpoint.best_metric
  best = ocp.CheckpointManager(
    ckpt_dir / 'best',
    item_names=('state', 'data'),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=config.checkpoint.keep_best,
      best_fn=lambda m: m.get(best_metric, -np.inf),
      best_mode='max',
      create=True,
    ),
  )
  with jax.set_mesh(mesh):
    state = jax.jit(lambda: nnx.split(create_state())[1], out_shardings=state_sharding)()
  start_step = 0
  if latest.latest_step() is not None:
    start_step = latest.latest_step()
    # Saved as a plain nested dict (readable with Orbax alone); restored onto
    # this run's shardings, whatever the mesh that wrote it.
    target = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      named(state),
      named(state_sharding),
    )
    restored = latest.restore(
      start_step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()),
    )
    nnx.replace_by_pure_dict(state, unnamed(restored['state']))
    data_iter.restore(restored['data'])
    log.info('resumed from step %d (%s)', start_step, data_iter.state)
  elif config.init_from.get('path'):
    params = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param).to_pure_dict()
    merged, taken, skipped = init_params_from(
      params, config.init_from.path, config.init_from.get('skip', ())
    )
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
  cand_table = jnp.asarray(losses.candidate_table(tokenizer, candidates))
  step_fn = make_train_step(graphdef, config, tokenizer, cand_table, pos_weight, channel_mask)
  train_step = jax.jit(
    step_fn,
    in_shardings=(state_sharding, batch_sharding, None),
    out_shardings=(state_sharding, None),
    donate_argnums=0,
  )

  def global_batch(local):
    return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}

  # ---- Loop -----------------------------------------------------------------------
  writer = MetricWriter(workdir, is_main)
  sched = optimizer.schedule(config.optim)
  stop = {'signal': None}

  def on_signal(signum, frame):
    del frame
    stop['signal'] = signum

  previous = signal.signal(signal.SIGTERM, on_signal)
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
    manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(named(state)), data=ocp.args.JsonSave(data_iter.state)
      ),
      metrics=extra_metrics,
      force=True,
    )

  if eval_examples and start_step == 0:
    writer.write(0, baseline_metrics(train_source, eval_examples, candidates, channels))
  try:
    with jax.set_mesh(mesh):
      for step in range(start_step + 1, total + 1):
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
          last_eval, thresholds = evaluate(
            model, tokenizer, eval_examples, candidates, channels, max_len=config.data.max_len
          )
          writer.write(step, last_eval)
          save(best, step, {k: float(v) for k, v in last_eval.items()})
          if is_main:
            (workdir / 'thresholds.json').write_text(json.dumps(thresholds, indent=2) + '\n')
        if step % config.checkpoint.every_steps == 0 or step == total:
          save(latest, step)
        if stop['signal'] is not None:
          save(latest, step)
          latest.wait_until_finished()
          raise Preempted(
            f'signal {stop["signal"]} at step {step}; checkpoint saved, re-run to resume'
          )
  finally:
    bar.close()
    writer.close()
    signal.signal(signal.SIGTERM, previous)
    latest.wait_until_finished()
    best.wait_until_finished()

  # ---- Final model folder -----------------------------------------------------------
  model = nnx.merge(graphdef, state)[0]
  model.eval()
  ckpt.save_model(
    workdir / 'final',
    model,
    tokenizer,
    {
      'config': json.loads(config.to_json_best_effort()),
      'step': total,
      'candidates': candidates,
      'channels': channels,
      'thresholds': thresholds,  # best F1 on the last validation pass
      'metrics': last_eval,
    },
  )
  return last_eval
