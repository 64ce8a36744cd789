r"""Peak memory of `ptmjax predict` against the size of its FASTA: does it stream?

    python -m benchmarks.predict_memory [--sizes-mb 1 4 16 50] [--model NAME_OR_DIR] [--smoke]

For each size, a FASTA of that many bytes is made from the S288C proteome (its records
repeated, ids made unique), and `ptmjax predict --fasta F --format sites --out O` runs
in a child process of its own; its peak resident memory is that child's getrusage
maxrss (each size in a fresh intermediate process, so one size's peak never hides
another's). Sizes run in turns from small to large. If predict held the proteome,
its probabilities or its output in memory, the peak would grow with the input; the
ratio of the largest to the smallest peak says whether it does. The model is the
shipped default unless `--model` names another. Writes OUT/predict_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

from benchmarks import common

# Runs the command in a child and prints that child's peak RSS (KiB on Linux).
_MEASURE = (
  'import resource, subprocess, sys; '
  'r = subprocess.run(sys.argv[1:], capture_output=True, text=True); '
  'sys.stderr.write(r.stderr[-2000:]); '
  'print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)'
)


def make_fasta(proteome: pathlib.Path, out: pathlib.Path, size: int) -> dict:
  """Repeats the proteome's records (ids suffixed with the copy) until `size` bytes."""
  from ptmjax.data import records

  recs = list(records.read_fasta(proteome))
  written, proteins, residues, copy = 0, 0, 0, 0
  with open(out, 'w') as f:
    while written < size:
      for r in recs:
        text = f'>{r.id}_{copy}\n{r.sequence}\n'
        f.write(text)
        written += len(text)
        proteins += 1
        residues += len(r.sequence)
        if written >= size:
          break
      copy += 1
  return {'bytes': written, 'proteins': proteins, 'residues': residues}


def measure(fasta: pathlib.Path, out: pathlib.Path, model: str | None) -> dict:
  cmd = [sys.executable, '-m', 'ptmjax.cli', 'predict', '--fasta', str(fasta),
         '--format', 'sites', '--out', str(out)]  # fmt: skip
  if model:
    cmd += ['--model', model]
  t0 = time.perf_counter()
  r = subprocess.run([sys.executable, '-c', _MEASURE, *cmd], capture_output=True, text=True)
  wall = time.perf_counter() - t0
  code, maxrss = r.stdout.split()[-2:]
  if int(code) != 0:
    raise RuntimeError(f'predict failed ({code}): {r.stderr[-2000:]}')
  return {'wall_s': wall, 'peak_rss_mib': int(maxrss) / 1024, 'out_bytes': out.stat().st_size}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes-mb', type=float, nargs='+', default=[1, 4, 16, 50])
  p.add_argument('--model', default=None, help='default: the shipped model')
  p.add_argument('--data', default=None, help='shared data dir (default ../shared/data)')
  p.add_argument('--out', default='benchmarks/results')
  p.add_argument('--smoke', action='store_true', help='tiny sizes, seconds: not a measurement')
  args = p.parse_args(argv)
  sizes = [0.02, 0.05] if args.smoke else args.sizes_mb
  proteome = common.shared_data(args.data) / 'yeast' / 's288c_r64_proteins.fasta'
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    for mb in sorted(sizes):
      fasta = tmp / f'in_{mb}.fasta'
      made = make_fasta(proteome, fasta, int(mb * 1e6))
      got = measure(fasta, tmp / f'out_{mb}.tsv', args.model)
      fasta.unlink()
      rows.append({'size_mb': mb, **made, **got})
      print(json.dumps(rows[-1]), flush=True)
  ratio = rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib']
  command = 'python -m benchmarks.predict_memory ' + ' '.join(argv or sys.argv[1:])
  payload = {'machine': common.machine(), 'command': command, 'model': args.model or 'shipped default',
             'rows': rows, 'peak_ratio_largest_to_smallest': ratio,
             'smoke': args.smoke}  # fmt: skip
  table = common.md_table(
    ['FASTA MB', 'proteins', 'residues', 'wall s', 'residues/s', 'peak RSS MiB', 'sites out MB'],
    [[f'{r["size_mb"]:g}', f'{r["proteins"]:,}', f'{r["residues"]:,}', f'{r["wall_s"]:.0f}',
      f'{r["residues"] / r["wall_s"]:,.0f}', f'{r["peak_rss_mib"]:.0f}',
      f'{r["out_bytes"] / 1e6:.1f}'] for r in rows],
  )  # fmt: skip
  notes = [
    f'Peak RSS, largest input / smallest: {ratio:.2f}x over a '
    f'{rows[-1]["size_mb"] / rows[0]["size_mb"]:g}x larger FASTA.',
  ]
  common.write(args.out, 'predict_memory', payload, table, notes)
  return 0


if __name__ == '__main__':
  sys.exit(main())
