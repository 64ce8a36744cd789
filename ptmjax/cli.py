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

  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
  for noisy in ('absl', 'jax'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  return args.fn(args)


if __name__ == '__main__':
  sys.exit(main())
