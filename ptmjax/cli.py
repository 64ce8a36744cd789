"""The `ptmjax` command: thin sub-commands over library functions.

Nothing in the package imports this module; each sub-command imports what it
runs when it runs (so `ptmjax predict` never loads TFDS or the trainer).
Exit codes: 0 done, 2 bad input or a missing file (one line on stderr),
143 preempted (re-run to resume), 1 a bug (traceback).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from ptmjax import commands
from ptmjax.errors import UsageError


def _data_build(args) -> int:
  from ptmjax.data import sources

  kwargs = {}
  if args.name == 'yaam':
    kwargs = {'yaam_file': args.yaam_file, 'proteome_file': args.proteome_file}
    if args.proteome_url:
      kwargs['proteome_url'] = args.proteome_url
  elif args.yaam_file or args.proteome_file or args.proteome_url:
    raise UsageError('--yaam-file/--proteome-file/--proteome-url only apply to yaam')
  start = time.perf_counter()
  builder = sources.build(
    args.name, args.manual_dir, args.data_dir, args.config, force=args.force, **kwargs
  )
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


def _export_hf(args) -> int:
  from ptmjax import checkpoint, zoo
  from ptmjax.models import hf_export

  folder = zoo.resolve(args.model, sha=args.sha256)
  model, tokenizer, meta = checkpoint.load_model(folder)
  out = hf_export.export(model, tokenizer, meta, args.out, source=folder)
  print(f'wrote {out} (transformers.AutoModelForMaskedLM.from_pretrained({str(out)!r}))')
  return 0


def _export_keras(args) -> int:
  from ptmjax import checkpoint, zoo
  from ptmjax.models import proteinbert_import as pbi

  folder = zoo.resolve(args.model, sha=args.sha256)
  out = pbi.export_pickle(checkpoint.load_model(folder)[0], args.out, source=folder)
  print(f'wrote {out} (the protein-bert package layout; `ptmjax convert-proteinbert` reads it)')
  return 0


def _convert_proteinbert(args) -> int:
  from ptmjax import checkpoint
  from ptmjax.models import num_params
  from ptmjax.models import proteinbert_import as pbi

  overrides = {'padding': args.padding}
  if args.ptm_head:
    overrides['ptm_head'] = args.ptm_head
  start = time.perf_counter()
  try:
    model, tokenizer, info = pbi.convert(
      args.pickle, dilation=args.dilation, seed=args.seed, **overrides
    )
  except pbi.ConversionError as e:
    print(f'ptmjax convert-proteinbert: error: {e}', file=sys.stderr)
    return 2
  path = checkpoint.save_model(args.out, model, tokenizer, info)
  s = info['sizes']
  print(
    f'converted ProteinBERT ({num_params(model.cfg) / 1e6:.1f} M parameters with heads; '
    f'{s["num_blocks"]} blocks, local {s["local_dim"]}, global {s["global_dim"]}, '
    f'{s["num_heads"]} heads, {s["num_annotations"]} annotations; padding {args.padding}) '
    f'in {time.perf_counter() - start:.1f} s -> {path}'
  )
  return 0


def _model_folder(args):
  """--checkpoint or --model (a shipped name, folder, archive or URL), else the shipped
  default, said on stderr so an output never hides which model made it."""
  from ptmjax import zoo

  if args.checkpoint and args.model:
    raise UsageError('name the model once: --checkpoint or --model')
  return zoo.resolve(
    args.checkpoint or args.model,
    sha=args.sha256,
    announce=lambda text: print(f'ptmjax {args.command}: {text}', file=sys.stderr),
  )


def _embed(args) -> int:
  from ptmjax import embed

  stats = embed.embed_fasta(
    _model_folder(args),
    args.fasta,
    args.out,
    max_len=args.max_len,
    stride=args.stride,
    tokens_per_batch=args.tokens_per_batch,
    dtype=args.dtype,
    lm=args.lm,
    pad_to=args.pad_to,
  )
  print(
    f'embedded {stats.proteins} proteins, {stats.residues} residues ({stats.windows} windows) '
    f'in {stats.seconds:.1f} s incl. compilation ({stats.residues_per_s:,.0f} residues/s) -> {args.out}'
  )
  return 0


def _predict(args) -> int:
  from ptmjax import predict

  stats, channels = predict.predict_fasta(
    _model_folder(args),
    args.fasta,
    args.out,
    calls=args.calls,
    channels=args.channels.split(',') if args.channels else None,
    max_len=args.max_len,
    stride=args.stride,
    calibrated=args.calibrated,
    fmt=args.format,
    min_probability=args.min_probability,
    top_k=args.top_k,
    report=args.report,
  )
  if args.report:
    print(f'report: {args.report}/index.html (one page per protein)')
  print(
    f'predicted {", ".join(channels)} for {stats.proteins} proteins, {stats.residues} residues '
    f'({stats.windows} windows) in {stats.seconds:.1f} s ({stats.residues_per_s:,.0f} '
    f'residues/s) -> {args.out}'
  )
  return 0


def _config(spec: str, rest: list[str]):
  """A config name or file[:arg] with --config.KEY=VALUE overrides, locked."""
  from ptmjax import configs

  return configs.load(spec, rest)  # bad overrides: UsageError, exit 2


def detected_cluster() -> tuple[str, int] | None:
  """(name, process count) of the multi-process cluster JAX can detect from the
  environment (SLURM with several tasks, a TPU pod slice's workers, Open MPI, ...), or
  None. A one-process job (an interactive SLURM shell) is not a cluster."""
  # JAX's own detection, the code jax.distributed.initialize() runs; it has no public
  # API, so a JAX that moved it detects nothing (with a warning) rather than failing.
  try:
    from jax._src import clusters

    cluster_types = list(clusters.ClusterEnv._cluster_types)
  except (ImportError, AttributeError):
    import logging

    logging.getLogger(__name__).warning(
      'this JAX (not 0.10) does not expose its cluster detection: no cluster is joined '
      'automatically; pass --distributed or --coordinator-address to join one'
    )
    return None
  for env in cluster_types:
    if env.opt_in_only_method:
      continue
    try:
      if env.is_env_present() and int(env.get_process_count() or 1) > 1:
        return env.name, int(env.get_process_count())
    except Exception:  # noqa: BLE001 - a half-set environment: not a cluster we can join
      continue
  return None


def _init_distributed(args) -> None:
  """`jax.distributed.initialize()`: from the explicit flags, or from the environment
  with --distributed, or without flags where JAX detects a multi-process cluster
  (--single-process opts out)."""
  kwargs = {}
  if args.coordinator_address:
    kwargs = dict(
      coordinator_address=args.coordinator_address,
      num_processes=args.num_processes,
      process_id=args.process_id,
    )
  elif not args.distributed:
    cluster = None if args.single_process else detected_cluster()
    if cluster is None:
      return
    print(f'ptmjax: {cluster[0]} cluster with {cluster[1]} processes detected; joining it '
          '(--single-process to run alone)', file=sys.stderr)  # fmt: skip
  import jax

  jax.distributed.initialize(**kwargs)


def _add_cluster_arguments(parser) -> None:
  g = parser.add_argument_group(
    'several processes (TPU pod, multi-GPU hosts, SLURM): every process runs the same '
    'command; the work dir must be one they all see'
  )
  g.add_argument(
    '--distributed',
    action='store_true',
    help='jax.distributed.initialize() from the environment (TPU pods, SLURM)',
  )
  g.add_argument(
    '--coordinator-address', default=None, help='host:port of process 0 (explicit multi-process)'
  )
  g.add_argument('--num-processes', type=int, default=None)
  g.add_argument('--process-id', type=int, default=None)
  g.add_argument(
    '--single-process',
    action='store_true',
    help='do not join a cluster detected in the environment (SLURM, TPU pod)',
  )


def _at_least(low: int):
  """An argparse type: an integer >= `low` (argparse then exits 2 with one line)."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < low:
      raise argparse.ArgumentTypeError(f'{value}: must be >= {low}')
    return value

  return parse


def jax_process_index() -> int:
  import jax

  return jax.process_index()


def _train(args, rest) -> int:
  _init_distributed(args)

  from ptmjax.run_dir import RunDir
  from ptmjax.training import trainer

  config = _config(args.config, rest)
  if args.restart and jax_process_index() == 0:
    RunDir.at(args.workdir).move_aside()
  result = trainer.train(config, args.workdir)  # Preempted: exit 143 (commands.run_guarded)
  print(json.dumps({k: round(v, 4) for k, v in result.items()}, indent=1))
  print(f'final model: {RunDir.at(args.workdir).final}')
  return 0


def _compare(args, rest) -> int:
  from ptmjax.studies import compare

  _config(args.config, rest)  # bad overrides stop here, before anything heavy is imported
  # Every process trains every stage and scores every model; process 0 writes the files.
  _init_distributed(args)
  return compare.run_from_args(args, rest)


def _sweep(args, rest) -> int:
  from ptmjax.studies import sweep

  _config(args.config, rest)
  _init_distributed(args)  # every process runs every trial; process 0 writes the files
  return sweep.run_from_args(args, rest)


BENCHMARKS = {
  'train': 'train_throughput',
  'packing': 'packing',
  'inference': 'inference',
  'scaling': 'scaling',
  'proteinbert': 'proteinbert_speed',
}


def _benchmarks_root():
  """The checkout whose `benchmarks/` to run: the working directory's, else the one the
  package was installed from in editable mode. Benchmarks are not installed."""
  import pathlib

  import ptmjax

  for root in (pathlib.Path.cwd(), pathlib.Path(ptmjax.__file__).resolve().parents[1]):
    if (root / 'benchmarks' / '__init__.py').is_file():
      return root
  raise FileNotFoundError(
    'the benchmarks live in the repository (benchmarks/), not in the installed package: '
    'run `ptmjax bench` from a clone of the repository'
  )


def _bench(args, rest) -> int:
  import subprocess

  root = _benchmarks_root()
  cmd = [sys.executable, '-m', f'benchmarks.{BENCHMARKS[args.name]}', *rest]
  return subprocess.run(cmd, cwd=root).returncode


def _quickstart(args, rest) -> int:
  from ptmjax.studies import compare

  _config(compare.quickstart_config(args.family), rest)
  compare.quickstart(args.workdir, rest, args.family)
  return 0


def _add_model_arguments(p) -> None:
  p.add_argument('--checkpoint', default=None, help='a trained model folder (or training work dir)')
  p.add_argument(
    '--model',
    default=None,
    help='a shipped model name (`ptmjax models`), a model folder, a .zip/.tar.gz of one, or '
    'an http(s) URL of one with its checksum (URL#sha256=HEX); default: the shipped '
    'yeast model',
  )
  p.add_argument('--sha256', default=None, help='the checksum of a --model URL or archive')


def _models(args) -> int:
  from ptmjax import zoo

  if args.pack:
    if not args.out:
      raise UsageError('--pack needs --out FILE.zip')
    digest = zoo.pack(args.pack, args.out)
    print(f'{args.out}\tsha256={digest}')
    print(
      f'use it as: ptmjax predict --model <URL of {pathlib.Path(args.out).name}>#sha256={digest}'
    )
    return 0
  rows = zoo.list_models()
  if not rows:
    print('no shipped or downloaded models')
  for r in rows:
    default = ' (default)' if r['name'] == zoo.DEFAULT and r['kind'] == 'shipped' else ''
    print(
      f'{r["name"]}{default}\t{r["kind"]}\t{r["family"]}\t{",".join(r["channels"])}\t'
      f'{r["megabytes"]} MB\t{r["path"]}'
    )
    if r['summary']:
      print(f'  {r["summary"]}')
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
  b.add_argument(
    '--force', action='store_true', help='rebuild even if built (needed when the inputs changed)'
  )
  b.set_defaults(fn=_data_build)

  c = sub.add_parser(
    'convert-hf',
    help="import an ESM-2 or BERT/ProtBert Hugging Face checkpoint (needs 'ptmjax[hf]')",
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

  x = sub.add_parser(
    'export-hf',
    help="write a transformer model as a Hugging Face folder (needs 'ptmjax[hf]')",
  )
  x.add_argument('--model', required=True, help='a model folder, training work dir or model name')
  x.add_argument('--sha256', default=None, help='the checksum of a --model URL or archive')
  x.add_argument('--out', required=True, help='the folder to write (safetensors, config, vocab)')
  x.set_defaults(fn=_export_hf)

  xk = sub.add_parser(
    'export-keras', help="write a ProteinBERT model as the protein-bert package's weight pickle"
  )
  xk.add_argument('--model', required=True, help='a model folder, training work dir or model name')
  xk.add_argument('--sha256', default=None, help='the checksum of a --model URL or archive')
  xk.add_argument('--out', required=True, help='the .pkl to write')
  xk.set_defaults(fn=_export_keras)

  pb = sub.add_parser(
    'convert-proteinbert',
    help="import ProteinBERT weights (the protein-bert package's pickle, read with NumPy only)",
  )
  pb.add_argument('--pickle', required=True, help='e.g. epoch_92400_sample_23500000.pkl')
  pb.add_argument('--out', required=True, help='model folder to write')
  pb.add_argument(
    '--dilation', type=int, default=5, help="the wide convolution's dilation (not in the file)"
  )
  pb.add_argument(
    '--padding',
    choices=('masked', 'reference'),
    default='masked',
    help="masked: padding never changes outputs; reference: the original's fixed-length rows",
  )
  pb.add_argument(
    '--ptm-head', choices=('linear', 'mlp', 'conv'), default=None, help='PTM head type'
  )
  pb.add_argument('--seed', type=int, default=0, help='initialises the new PTM and count heads')
  pb.set_defaults(fn=_convert_proteinbert)

  e = sub.add_parser('embed', help='per-residue and pooled embeddings of a FASTA file')
  _add_model_arguments(e)
  e.add_argument('--fasta', required=True, help='protein FASTA (lowercase accepted, .gz ok)')
  e.add_argument('--out', required=True, help='output .npz')
  e.add_argument(
    '--max-len', type=_at_least(3), default=None, help="tokens per window (default: the model's)"
  )
  e.add_argument(
    '--stride', type=_at_least(1), default=None, help='residues between windows (default: half)'
  )
  e.add_argument(
    '--tokens-per-batch',
    type=int,
    default=None,
    help='padded tokens per forward pass (default 2,048 on CPU, 16,384 on accelerators)',
  )
  e.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None, help='compute dtype')
  e.add_argument(
    '--lm', action='store_true', help="also write lm/<id>: the LM head's probabilities per residue"
  )
  e.add_argument(
    '--pad-to',
    type=int,
    default=None,
    help="ProteinBERT: pad every row to N tokens, the original's (reference) padding",
  )
  e.set_defaults(fn=_embed)

  pr = sub.add_parser('predict', help='per-residue PTM probabilities for a FASTA file')
  _add_model_arguments(pr)
  pr.add_argument('--fasta', required=True, help='protein FASTA (lowercase accepted, .gz ok)')
  pr.add_argument('--out', required=True, help='output file (see --format)')
  pr.add_argument(
    '--format',
    choices=('tsv', 'sites', 'gff3', 'json'),
    default='tsv',
    help='tsv: a row per residue; sites: a row per called site with its +-7 context, raw and '
    'calibrated probability, call and known label; gff3: a feature per site; json',
  )
  pr.add_argument(
    '--min-probability',
    type=float,
    default=None,
    help='sites/gff3/json: every candidate at or above this calibrated probability (raw '
    'where none is stored) instead of the called ones',
  )
  pr.add_argument(
    '--top-k',
    type=_at_least(1),
    default=None,
    help="sites/gff3/json: each protein's k best per channel",
  )
  pr.add_argument(
    '--calls',
    action='store_true',
    help="add 0/1 columns at the checkpoint's validation-chosen (best-F1) thresholds",
  )
  pr.add_argument(
    '--channels', default=None, help='comma-separated subset (default: every trained channel)'
  )
  pr.add_argument(
    '--calibrated',
    action='store_true',
    help='probabilities mapped by the Platt scaling fitted on validation at the end of '
    'training (columns CHANNEL_calibrated): rates a site is modified, not raw head outputs',
  )
  pr.add_argument(
    '--max-len', type=_at_least(3), default=None, help="tokens per window (the model's)"
  )
  pr.add_argument(
    '--stride', type=_at_least(1), default=None, help='residues between windows (half)'
  )
  pr.add_argument(
    '--report',
    default=None,
    help='also write a static HTML report to this folder: an index and one page per '
    'protein (residue tracks of every channel with its threshold, known sites, a sites table)',
  )
  pr.set_defaults(fn=_predict)

  mo = sub.add_parser('models', help='the shipped and downloaded models; --pack to publish one')
  mo.add_argument('--pack', default=None, help='a model folder to zip (prints its sha256)')
  mo.add_argument('--out', default=None, help='the .zip --pack writes')
  mo.set_defaults(fn=_models)

  tr = sub.add_parser(
    'train',
    help='train per an ml_collections config (overrides: --config.KEY=VALUE)',
    allow_abbrev=False,
  )
  tr.add_argument(
    '--config',
    required=True,
    help='config name or file[:arg], e.g. yaam:tiny (ptmjax/configs/yaam.py) or my_config.py',
  )
  tr.add_argument(
    '--workdir', required=True, help='checkpoints, metrics.jsonl, TensorBoard, final/'
  )
  tr.add_argument(
    '--restart',
    action='store_true',
    help='move an existing run in --workdir aside (WORKDIR.replaced-<time>) and start again',
  )
  _add_cluster_arguments(tr)
  tr.set_defaults(fn=_train, takes_rest=True)

  cp = sub.add_parser(
    'compare',
    help='single- vs two-stage study with baselines and a report (ptmjax/configs/compare.py)',
    allow_abbrev=False,
  )
  commands.add_study_arguments(cp, 'compare:small', 'one sub-directory per stage, report/')
  _add_cluster_arguments(cp)
  cp.set_defaults(fn=_compare, takes_rest=True)

  sw = sub.add_parser(
    'sweep',
    help='random/grid hyper-parameter search, resumable (ptmjax/configs/sweep.py)',
    allow_abbrev=False,
  )
  commands.add_study_arguments(sw, 'sweep:small', 'plan.json, trial_NNN/, results.md')
  _add_cluster_arguments(sw)
  sw.set_defaults(fn=_sweep, takes_rest=True)

  be = sub.add_parser(
    'bench',
    help='speed benchmarks (from a clone: they live in benchmarks/): train (vs PyTorch), '
    'packing, inference, scaling, proteinbert (vs Keras); `ptmjax bench NAME --help` for options',
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
  q.add_argument(
    '--family',
    choices=('transformer', 'proteinbert'),
    default='transformer',
    help='the encoder family every stage trains',
  )
  q.set_defaults(fn=_quickstart, takes_rest=True)

  args, rest = parser.parse_known_args(argv)
  if rest and not getattr(args, 'takes_rest', False):
    parser.error(f'unrecognized arguments: {" ".join(rest)}')
  commands.setup_logging()
  takes_rest = getattr(args, 'takes_rest', False)
  return commands.run_guarded(
    f'ptmjax {args.command}', lambda: args.fn(args, rest) if takes_rest else args.fn(args)
  )


if __name__ == '__main__':
  sys.exit(main())
