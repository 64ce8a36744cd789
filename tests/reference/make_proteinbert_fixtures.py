r"""Keras reference outputs for the ProteinBERT parity tests (tests/test_proteinbert.py).

Runs in the reference environment only (never in the default install or CI):

    python3.11 -m venv ref && ref/bin/pip install "tensorflow-cpu==2.15.1" "pandas<3" \
      && ref/bin/pip install --no-deps protein-bert==1.0.1
    ref/bin/python tests/reference/make_proteinbert_fixtures.py [--pickle-dir DIR]

For each size below it builds the package's own `create_model`, sets random weights
(`proteinbert_random.random_weights`, NumPy only, from a seed), and writes
`tests/fixtures/proteinbert/<size>.npz`: the sizes, the seed, the package's own
tokens for a few sequences padded to `seq_len`, annotation inputs, and the Keras
outputs (token and annotation probabilities). The test regenerates the same
weights, writes them as the package's pickle, converts it with `ptmjax
convert-proteinbert` and compares, without TensorFlow. `--pickle-dir` also keeps
the pickles (the published file's format: `(n_annotations, weights, [])`).
"""

import argparse
import os
import pathlib
import pickle
import sys

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from proteinbert_random import random_weights  # noqa: E402

SIZES = {
  # A small model with a non-default dilation and an odd kernel: fast, every code path.
  'small': dict(seq_len=48, n_annotations=11, d_hidden_seq=16, d_hidden_global=24, n_blocks=2,
                n_heads=3, d_key=8, conv_kernel_size=5, wide_conv_dilation_rate=3, seed=1),
  # The published model's sizes (15,981,321 parameters).
  'published': dict(seq_len=512, n_annotations=8943, d_hidden_seq=128, d_hidden_global=512,
                    n_blocks=6, n_heads=4, d_key=64, conv_kernel_size=9,
                    wide_conv_dilation_rate=5, seed=2),
}  # fmt: skip
SEQUENCES = (
  'MKSPEELRRSSTKGKSPTYRRASLLK',
  'MSTPSYKGRRKSAPTEELbzoXUACDEFGHIKLMNPQRSTVWY',  # lowercase and B/Z/O: <OTHER>
  'M',
)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--out', default=str(HERE.parent / 'fixtures' / 'proteinbert'))
  p.add_argument('--pickle-dir', default=None)
  args = p.parse_args()
  import tensorflow as tf
  from proteinbert import conv_and_global_attention_model as cgam
  from proteinbert.model_generation import tokenize_seqs
  from proteinbert.tokenization import n_tokens

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  for name, s in SIZES.items():
    s = dict(s)
    seed, seq_len, n_ann = s.pop('seed'), s.pop('seq_len'), s.pop('n_annotations')
    model = cgam.create_model(seq_len, n_tokens, n_ann, **s)
    named = [(w.name, tuple(w.shape)) for w in model.weights]
    weights = random_weights(named, seed)
    model.set_weights(weights)
    seqs = list(SEQUENCES)
    if name == 'published':
      rng = np.random.default_rng(seed)
      seqs.append(''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), seq_len - 2)))  # fills the row
    tokens = tokenize_seqs(seqs, seq_len)
    rng = np.random.default_rng(seed + 100)
    annotations = (rng.random((len(seqs), n_ann)) < 0.05).astype(np.int8)
    annotations[0] = 0  # no annotations, as inference without them
    token_probs, annotation_probs = model.predict(
      [tokens, annotations], batch_size=len(seqs), verbose=0
    )
    np.savez_compressed(
      out / f'{name}.npz',
      sizes=np.array([seq_len, n_ann, s['d_hidden_seq'], s['d_hidden_global'], s['n_blocks'],
                      s['n_heads'], s['d_key'], s['conv_kernel_size'], s['wide_conv_dilation_rate'], seed]),
      sequences=np.array(seqs),
      tokens=tokens,
      annotations=annotations,
      token_probs=token_probs.astype(np.float32),
      annotation_probs=annotation_probs.astype(np.float32),
      keras_names=np.array([n for n, _ in named]),
      versions=np.array([tf.__version__, 'protein-bert 1.0.1']),
    )  # fmt: skip
    if args.pickle_dir:
      d = pathlib.Path(args.pickle_dir)
      d.mkdir(parents=True, exist_ok=True)
      with open(d / f'{name}.pkl', 'wb') as f:
        pickle.dump((n_ann, weights, []), f)
    print(
      name, 'parameters', model.count_params(), 'tokens', tokens.shape, '->', out / f'{name}.npz'
    )


if __name__ == '__main__':
  main()
