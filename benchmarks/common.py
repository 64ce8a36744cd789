"""What every benchmark shares: model sizes, real proteins, the ptmjax train step, timing, output."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]  # benchmarks/ sits at the repository root

# (layers, width, heads, mlp): ESM-2 shapes (facebook/esm2_t6_8M_UR50D, t12_35M, t30_150M).
SIZES = {
  'tiny': (2, 64, 4, 256),
  'small': (3, 96, 4, 384),  # the `small` experiment configs
  'esm2_8m': (6, 320, 20, 1280),
  'esm2_35m': (12, 480, 20, 1920),
  'esm2_150m': (30, 640, 20, 2560),
}


def shared_data(path: str | None = None) -> pathlib.Path:
  """--data, else $PTMJAX_SHARED_DATA, else ../shared/data beside the repo."""
  p = pathlib.Path(path or os.environ.get('PTMJAX_SHARED_DATA', REPO.parent / 'shared' / 'data'))
  if not (p / 'yaam').is_dir():
    raise FileNotFoundError(f'no yaam/ under {p}: pass --data DIR (the shared data folder)')
  return p


def load_proteins(which: str, data: pathlib.Path) -> list[dict]:
  """Real proteins as {'sequence', 'labels'} dicts: 'yaam' (its 4,862 labelled proteins),
  'ptmdb' (the merged multi-organism records) or 'proteome' (S288C, all 5,983)."""
  from ptmjax.data import records
  from ptmjax.data.builders.ptmdb import parse as ptmdb
  from ptmjax.data.builders.yaam import parse as yaam

  tally = records.Tally()
  proteome = yaam.read_proteome(data / 'yeast' / 's288c_r64_proteins.fasta', tally)
  if which == 'proteome':
    recs = [
      records.ProteinRecord(k, s, records.unknown_labels(len(s))) for k, s in proteome.items()
    ]
  elif which == 'yaam':
    recs = yaam.parse_yaam(data / 'yaam' / 'yaam_dec15_21.txt', proteome, tally).labeled
  elif which == 'ptmdb':
    parsed = ptmdb.parse_manual_dir(data / 'multiorganism', ptmdb.FORMATS, tally)
    recs = ptmdb.merge_records(parsed, tally)
  else:
    raise ValueError(f'unknown protein set {which!r}')
  return [{'id': r.id, 'sequence': r.sequence, 'labels': r.labels} for r in recs]


def model_config(size: str, dtype: str = 'float32', ptm_head: str = 'linear', **kw):
  from ptmjax.data import tokenizer as tok
  from ptmjax.models import ModelConfig

  layers, width, heads, mlp = SIZES[size]
  t = tok.esm()
  return ModelConfig(
    vocab_size=t.vocab_size,
    num_layers=layers,
    embed_dim=width,
    num_heads=heads,
    mlp_dim=mlp,
    max_len=1026,
    dropout_rate=0.0,
    ptm_head=ptm_head,
    dtype=dtype,
    pad_id=t.pad_id,
    mask_id=t.mask_id,
    **kw,
  )


def train_config(batch_size: int, max_len: int, mode: str = 'pack'):
  """The trainer's loss/optimizer settings (ptmjax/configs/yaam.py), this batch shape."""
  from ptmjax.configs import yaam

  c = yaam.get_config('small')
  c.data.update(batch_size=batch_size, max_len=max_len, mode=mode)
  c.optim.update(total_steps=1000, warmup_steps=10)
  return c


class JaxTrainStep:
  """The trainer's own jitted step (ptmjax.training.steps.make_train_step, donation,
  NamedSharding over `mesh`) on a freshly initialised model; `__call__` runs one step
  and blocks until it is done."""

  def __init__(self, model_cfg, config, candidates: dict, mesh=None):
    import jax
    from flax import nnx

    from ptmjax import sharding as shd
    from ptmjax.data import ptm_types
    from ptmjax.data import tokenizer as tok
    from ptmjax.data.candidates import Candidates
    from ptmjax.models import create_model
    from ptmjax.training import optimizer, steps
    from ptmjax.training.loss_spec import LossSpec

    tokenizer = tok.esm()
    mesh = mesh or shd.make_mesh({'data': 1, 'fsdp': 1, 'tensor': 1}, jax.devices()[:1])

    def create_state():
      model = create_model(model_cfg, 0)
      model.train()
      tx = optimizer.make_optimizer(config.optim, nnx.state(model, nnx.Param), model_cfg.num_layers)
      return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    graphdef, abstract_state = nnx.split(nnx.eval_shape(create_state))
    state_sharding = shd.state_sharding(abstract_state, mesh, shd.DEFAULT_RULES)
    batch_axes = tuple(a for a in ('data', 'fsdp') if a in mesh.axis_names)
    self.batch_sharding = jax.sharding.NamedSharding(mesh, shd.P(batch_axes))
    with jax.set_mesh(mesh):
      self.state = jax.jit(lambda: nnx.split(create_state())[1], out_shardings=state_sharding)()
    channel_mask = np.isin(np.array(ptm_types.PTM_NAMES), list(candidates))
    pos_weight = np.full(ptm_types.NUM_TYPES, 10.0, np.float32)
    spec = LossSpec.from_config(
      config, tokenizer, Candidates.from_config(candidates), pos_weight, channel_mask
    )
    fn = steps.make_train_step(graphdef, spec, tokenizer)
    self.mesh = mesh
    self._step = jax.jit(
      fn,
      in_shardings=(state_sharding, self.batch_sharding, None),
      out_shardings=(state_sharding, None),
      donate_argnums=0,
    )
    self._n = 0

  def put(self, batch: dict):
    import jax

    return {k: jax.device_put(v, self.batch_sharding) for k, v in batch.items()}

  def __call__(self, batch) -> float:
    import jax
    import jax.numpy as jnp

    self._n += 1
    with jax.set_mesh(self.mesh):
      self.state, aux = self._step(self.state, batch, jnp.int32(self._n))
    return float(aux['loss'])  # blocks


def timed_pair(fa, fb, *, warmup: int, reps: int, settle: int = 1) -> tuple[dict, dict, list]:
  """`timed` for two functions taking turns, so that a machine whose speed drifts over
  minutes (shared cores) slows both alike: each of `reps` rounds runs `settle` untimed
  calls of a then one timed, then the same for b. The untimed calls absorb the cost of
  the switch (caches, the allocator's pages, thread pools waking up: an ESM-2-35M-sized
  ptmjax step at 8 x 512 took 9.2 s right after a PyTorch step, 7.6-7.7 s after one of
  its own). Returns both timings and the
  per-round ratios time(b) / time(a): how many times faster `a` is."""
  first = {}
  for name, fn in (('a', fa), ('b', fb)):
    t = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - t
    for _ in range(max(warmup - 1, 0)):
      fn()
  times = {'a': [], 'b': []}
  for _ in range(reps):
    for name, fn in (('a', fa), ('b', fb)):
      for _ in range(settle):
        fn()
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  a, b = (_summary(first[n], times[n]) for n in 'ab')
  return a, b, [tb / ta for ta, tb in zip(times['a'], times['b'], strict=True)]


def _summary(first: float, times: list[float]) -> dict:
  return {
    'first_call_s': first,
    'median_s': statistics.median(times),
    'min_s': min(times),
    'max_s': max(times),
    'reps': len(times),
    'times_s': times,
  }


def timed(fn, *, warmup: int, reps: int) -> dict:
  """Seconds of the first call (compilation included), then the median of `reps` calls
  after `warmup` more."""
  t = time.perf_counter()
  fn()
  first = time.perf_counter() - t
  for _ in range(max(warmup - 1, 0)):
    fn()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return _summary(first, times)


def machine() -> dict:
  import jax

  d = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        cpu = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  info = {
    'cpu': cpu,
    'cpu_cores': len(os.sched_getaffinity(0))
    if hasattr(os, 'sched_getaffinity')
    else os.cpu_count(),
    'platform': platform.platform(),
    'jax': jax.__version__,
    'backend': d.platform,
    'device_kind': d.device_kind,
    'devices': jax.device_count(),
  }
  try:
    import torch

    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
  except ImportError:
    pass
  return info


def write(out_dir, name: str, payload: dict, table: list[str], notes: list[str] = ()) -> None:
  """OUT/name.json (everything) and OUT/name.md (the table a README quotes)."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / f'{name}.json').write_text(json.dumps(payload, indent=1) + '\n')
  m = payload['machine']
  lines = [
    f'### {name}',
    '',
    f'Machine: {m["cpu"]}, {m["cpu_cores"]} cores; {m["backend"]} ({m["device_kind"]}) x '
    f'{m["devices"]}; JAX {m["jax"]}' + (f', PyTorch {m["torch"]}' if 'torch' in m else '') + '.',
    f'Command: `{payload["command"]}`'
    + (' (smoke: not a measurement)' if payload.get('smoke') else ''),
    '',
    *table,
    '',
    *notes,
  ]
  (out / f'{name}.md').write_text('\n'.join(lines).rstrip() + '\n')
  print('\n'.join(lines))


def md_table(header: list[str], rows: list[list]) -> list[str]:
  return [
    '| ' + ' | '.join(header) + ' |',
    '|' + '---|' * len(header),
    *('| ' + ' | '.join(str(x) for x in r) + ' |' for r in rows),
  ]


def batch_of(proteins: list[dict], rows, length: int, mode: str = 'bucket', max_segments: int = 8):
  """Arrays of one batch, built by the training pipeline's own `assemble`."""
  from ptmjax.data import pipeline
  from ptmjax.data import tokenizer as tok

  pipe = pipeline.Pipeline(
    proteins, tok.esm(), batch_size=len(rows), max_len=length, mode=mode,
    max_segments=max_segments,
  )  # fmt: skip
  return pipe.assemble(rows, length)
