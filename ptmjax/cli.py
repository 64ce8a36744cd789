"""The `ptmjax` command: thin sub-commands over library functions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time


def _data_build(args) -> int:
  from ptmjax.data import dataset

  kwargs = {}
  if args.name == 'yaam':
    kwargs = {'yaam_file': args.yaam_file, 'proteome_file': args.proteome_file}
    if args.proteome_url:
      kwargs['proteome_url'] = args.proteome_url
  elif args.yaam_file or args.proteome_file or args.proteome_url:
    raise SystemExit('--yaam-file/--proteome-file/--proteome-url only apply to yaam')
  start = time.perf_counter()
  builder = dataset.build(args.name, args.manual_dir, args.data_dir, args.config, **kwargs)
  meta = dict(builder.info.metadata)
  splits = {k: v['proteins'] for k, v in meta.get('splits', {}).items()}
  dropped = {
    k: v
    for k, v in meta.get('counts', {}).items()
    if not k.startswith(('notes/', 'dbptm_types/', 'sections/'))
  }
  print(
    f'built {builder.info.full_name} in {time.perf_counter() - start:.1f} s -> {builder.data_dir}'
  )
  print(f'proteins per split: {splits}')
  print(f'counts: {json.dumps(dropped)}')
  return 0


def _convert_hf(args) -> int:
  from ptmjax import checkpoint
  from ptmjax.models import hf_import, num_params

  overrides = {k: v for k, v in (('ptm_head', args.ptm_head), ('dtype', args.dtype)) if v}
  start = time.perf_counter()
  model, tokenizer, info = hf_import.convert(args.model, seed=args.seed, **overrides)
  path = checkpoint.save_model(args.out, model, tokenizer, info)
  cfg = model.cfg
  print(
    f'converted {info["architecture"]} ({num_params(cfg) / 1e6:.1f} M parameters with heads; '
    f'{cfg.num_layers} layers, width {cfg.embed_dim}, {cfg.num_heads} heads, '
    f'max_len {cfg.max_len}; MLM head imported: {info["mlm_head_imported"]}) '
    f'in {time.perf_counter() - start:.1f} s -> {path}'
  )
  return 0


def _embed(args) -> int:
  from ptmjax import inference

  stats = inference.embed_fasta(
    args.checkpoint,
    args.fasta,
    args.out,
    max_len=args.max_len,
    stride=args.stride,
    tokens_per_batch=args.tokens_per_batch,
    dtype=args.dtype,
  )
  print(
    f'embedded {stats.proteins} proteins, {stats.residues} residues ({stats.windows} windows) '
    f'in {stats.seconds:.1f} s incl. compilation ({stats.residues_per_s:,.0f} residues/s) -> {args.out}'
  )
  return 0


def _predict(args) -> int:
  from ptmjax import predict

  stats, channels = predict.predict_fasta(
    args.checkpoint,
    args.fasta,
    args.out,
    calls=args.calls,
    channels=args.channels.split(',') if args.channels else None,
    max_len=args.max_len,
    stride=args.stride,
  )
  print(
    f'predicted {", ".join(channels)} for {stats.proteins} proteins, {stats.residues} residues '
    f'({stats.windows} windows) in {stats.seconds:.1f} s ({stats.residues_per_s:,.0f} '
    f'residues/s) -> {args.out}'
  )
  return 0


def _config(path: str, rest: list[str]):
  """An ml_collections config file[:arg] with --config.KEY=VALUE overrides, locked."""
  from absl import flags
  from ml_collections import config_flags

  bad = [a for a in rest if not a.startswith('--config.')]
  if bad:
    raise SystemExit(f'unknown arguments {bad}; overrides look like --config.optim.lr=3e-4')
  values = flags.FlagValues()
  argv = ['ptmjax', f'--config={path}', *rest]
  config_flags.DEFINE_config_file(
    'config',
    None,
    'ml_collections config file[:arg]',
    flag_values=values,
    lock_config=True,
    sys_argv=argv,  # else the overrides are looked up in sys.argv (wrong when called in-process)
  )
  values(argv)
  return values.config


def _train(args, rest) -> int:
  if args.coordinator_address or args.distributed:
    import jax

    kwargs = {}
    if args.coordinator_address:
      kwargs = dict(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
      )
    jax.distributed.initialize(**kwargs)

  from ptmjax.training import trainer

  config = _config(args.config, rest)
  try:
    result = trainer.train(config, args.workdir)
  except trainer.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr)
    return 143
  print(json.dumps({k: round(v, 4) for k, v in result.items()}, indent=1))
  print(f'final model: {args.workdir}/final')
  return 0


def _compare(args, rest) -> int:
  from experiments import compare_stages

  config = _config(args.config, rest)
  command = ' '.join(
    ['ptmjax compare', f'--config {args.config}', f'--workdir {args.workdir}', *rest]
  )
  path = compare_stages.run(config, args.workdir, command)
  print(f'report: {path}')
  return 0


def _sweep(args, rest) -> int:
  from experiments import sweep

  config = _config(args.config, rest)
  command = ' '.join(
    ['ptmjax sweep', f'--config {args.config}', f'--workdir {args.workdir}', *rest]
  )
  try:
    path = sweep.run(config, args.workdir, command)
  except sweep.SweepError as e:
    print(f'ptmjax sweep: {e}', file=sys.stderr)
    return 2
  print(f'results: {path}')
  return 0


BENCHMARKS = {
  'train': 'train_throughput',
  'packing': 'packing',
  'inference': 'inference',
  'scaling': 'scaling',
}


def _bench(args, rest) -> int:
  import importlib

  module = importlib.import_module(f'experiments.benchmarks.{BENCHMARKS[args.name]}')
  return module.main(rest)


def _quickstart(args, rest) -> int:
  import pathlib
  import shutil

  import experiments.configs
  from experiments import compare_stages

  t = time.time()
  config_file = pathlib.Path(experiments.configs.__file__).parent / 'compare.py'
  config = _config(f'{config_file}:quickstart', rest)
  workdir = pathlib.Path(args.workdir)
  print(
    'ptmjax quickstart: SYNTHETIC data generated in code (planted motifs, see '
    'ptmjax/data/synthetic.py): stage 1 on a multi-organism-like source, stage 2 on a '
    f'yeast-like target, against single-stage and baselines -> {workdir}'
  )
  command = f'ptmjax quickstart --workdir {args.workdir}'
  path = compare_stages.run(config, workdir, command)
  final = workdir / 'final'
  if final.exists():
    shutil.rmtree(final)
  seed = compare_stages.seeds_of(config)[0]
  shutil.copytree(workdir / f'seed{seed}' / 'two' / 'final', final)
  print(f'done in {time.time() - t:.0f} s')
  print(f'report:      {path}')
  print(f'final model: {final} (two-stage, seed {seed})')
  print(f'next:        ptmjax predict --checkpoint {final} --fasta YOUR.fasta --out preds.tsv')
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='ptmjax', description=__doc__)
  sub = parser.add_subparsers(dest='command', required=True)

  data = sub.add_parser('data', help='build and inspect datasets').add_subparsers(
    dest='data_command', required=True
  )
  b = data.add_parser('build', help='build a TFDS dataset (array_record, no TensorFlow)')
  b.add_argument('name', choices=('yaam', 'ptmdb'))
  b.add_argument(
    '--manual-dir', required=True, help='folder holding the raw files (searched recursively)'
  )
  b.add_argument('--data-dir', required=True, help='TFDS data dir to write into')
  b.add_argument(
    '--config', default=None, help='builder config, e.g. all, uniprot, annotated_fasta, dbptm'
  )
  b.add_argument(
    '--yaam-file', default=None, help='yaam: export file (else yaam*.txt in the manual dir)'
  )
  b.add_argument(
    '--proteome-file', default=None, help='yaam: S288C proteome FASTA (else found or downloaded)'
  )
  b.add_argument('--proteome-url', default=None, help='yaam: where to download the proteome from')
  b.set_defaults(fn=_data_build)

  c = sub.add_parser(
    'convert-hf', help='import an ESM-2 or BERT/ProtBert Hugging Face checkpoint (needs torch)'
  )
  c.add_argument(
    '--model', required=True, help='local folder or hub name (e.g. facebook/esm2_t12_35M_UR50D)'
  )
  c.add_argument(
    '--out', required=True, help='model folder to write (Orbax params + ptmjax_model.json)'
  )
  c.add_argument(
    '--ptm-head', choices=('linear', 'mlp', 'conv'), default=None, help='PTM head type'
  )
  c.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None, help='compute dtype')
  c.add_argument('--seed', type=int, default=0, help='initialises the new heads')
  c.set_defaults(fn=_convert_hf)

  e = sub.add_parser('embed', help='per-residue and pooled embeddings of a FASTA file')
  e.add_argument('--checkpoint', required=True, help='model folder (or training work dir)')
  e.add_argument('--fasta', required=True, help='protein FASTA (lowercase accepted, .gz ok)')
  e.add_argument('--out', required=True, help='output .npz')
  e.add_argument(
    '--max-len', type=int, default=None, help="tokens per window (default: the model's)"
  )
  e.add_argument(
    '--stride', type=int, default=None, help='residues between windows (default: half)'
  )
  e.add_argument(
    '--tokens-per-batch',
    type=int,
    default=None,
    help='padded tokens per forward pass (default 2,048 on CPU, 16,384 on accelerators)',
  )
  e.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None, help='compute dtype')
  e.set_defaults(fn=_embed)

  pr = sub.add_parser('predict', help='per-residue PTM probabilities for a FASTA file')
  pr.add_argument('--checkpoint', required=True, help='a trained model folder, e.g. RUN/final')
  pr.add_argument('--fasta', required=True, help='protein FASTA (lowercase accepted, .gz ok)')
  pr.add_argument('--out', required=True, help='output TSV, one row per residue')
  pr.add_argument(
    '--calls',
    action='store_true',
    help="add 0/1 columns at the checkpoint's validation-chosen (best-F1) thresholds",
  )
  pr.add_argument(
    '--channels', default=None, help='comma-separated subset (default: every trained channel)'
  )
  pr.add_argument('--max-len', type=int, default=None, help="tokens per window (the model's)")
  pr.add_argument('--stride', type=int, default=None, help='residues between windows (half)')
  pr.set_defaults(fn=_predict)

  tr = sub.add_parser(
    'train',
    help='train per an ml_collections config (overrides: --config.KEY=VALUE)',
    allow_abbrev=False,
  )
  tr.add_argument(
    '--config', required=True, help='config file[:arg], e.g. experiments/configs/yaam.py:tiny'
  )
  tr.add_argument(
    '--workdir', required=True, help='checkpoints, metrics.jsonl, TensorBoard, final/'
  )
  tr.add_argument(
    '--distributed',
    action='store_true',
    help='jax.distributed.initialize() from the environment (TPU pods, SLURM)',
  )
  tr.add_argument(
    '--coordinator-address', default=None, help='host:port of process 0 (explicit multi-process)'
  )
  tr.add_argument('--num-processes', type=int, default=None)
  tr.add_argument('--process-id', type=int, default=None)
  tr.set_defaults(fn=_train, takes_rest=True)

  cp = sub.add_parser(
    'compare',
    help='single- vs two-stage study with baselines and a report (experiments/configs/compare.py)',
    allow_abbrev=False,
  )
  cp.add_argument('--config', required=True, help='e.g. experiments/configs/compare.py:small')
  cp.add_argument('--workdir', required=True, help='one sub-directory per stage, report/')
  cp.set_defaults(fn=_compare, takes_rest=True)

  sw = sub.add_parser(
    'sweep',
    help='random/grid hyper-parameter search, resumable (experiments/configs/sweep.py)',
    allow_abbrev=False,
  )
  sw.add_argument('--config', required=True, help='e.g. experiments/configs/sweep.py:small')
  sw.add_argument('--workdir', required=True, help='plan.json, trial_NNN/, results.md')
  sw.set_defaults(fn=_sweep, takes_rest=True)

  be = sub.add_parser(
    'bench',
    help='speed benchmarks: train (vs PyTorch), packing, inference, scaling; '
    '`ptmjax bench NAME --help` for options',
    allow_abbrev=False,
    add_help=False,  # --help goes to the benchmark's own parser
  )
  be.add_argument('name', choices=tuple(BENCHMARKS))
  be.set_defaults(fn=_bench, takes_rest=True)

  q = sub.add_parser(
    'quickstart',
    help='the whole two-stage pipeline on synthetic data generated in code (no files), minutes',
    allow_abbrev=False,
  )
  q.add_argument('--workdir', default='runs/quickstart', help='where stages, report and final go')
  q.set_defaults(fn=_quickstart, takes_rest=True)

  args, rest = parser.parse_known_args(argv)
  if rest and not getattr(args, 'takes_rest', False):
    parser.error(f'unrecognized arguments: {" ".join(rest)}')
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
  for noisy in ('absl', 'jax'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  from ptmjax.data.records import InputError

  try:
    return args.fn(args, rest) if getattr(args, 'takes_rest', False) else args.fn(args)
  except (InputError, FileNotFoundError) as e:
    # Bad input is the user's to fix: the message (file, line, record), not a traceback.
    print(f'ptmjax {args.command}: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
