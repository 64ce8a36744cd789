"""The Keras side of `ptmjax bench proteinbert`: run with the reference environment's Python
(TensorFlow + the protein-bert package; see tests/reference/make_proteinbert_fixtures.py).

Its one argument is the model's sizes as JSON (`proteinbert_speed.PUBLISHED` keys). Reads
commands from stdin, one per line, `infer ROWS LENGTH` or `train ROWS LENGTH`,
runs that step once on the package's own model of those sizes and answers `ok SECONDS`; models are built once per length (Keras fixes
the length when it builds). Random inputs from a fixed seed, so every call sees the
same batch.
"""

import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def main():
  import numpy as np
  from proteinbert import conv_and_global_attention_model as cgam
  from tensorflow import keras

  s = json.loads(sys.argv[1])
  n_ann = s['num_annotations']
  models, batches = {}, {}
  print('ready', flush=True)
  for line in sys.stdin:
    kind, rows, length = line.split()
    rows, length = int(rows), int(length)
    if length not in models:
      model = cgam.create_model(
        length, s['vocab_size'], n_ann, d_hidden_seq=s['local_dim'],
        d_hidden_global=s['global_dim'], n_blocks=s['num_blocks'], n_heads=s['num_heads'],
        d_key=s['key_dim'], conv_kernel_size=s['kernel'],
      )  # fmt: skip
      model.compile(
        optimizer=keras.optimizers.Adam(2e-4),
        loss=['sparse_categorical_crossentropy', 'binary_crossentropy'],
      )
      models[length] = model
    if (rows, length) not in batches:
      rng = np.random.default_rng(0)
      tokens = rng.integers(0, 25, (rows, length)).astype(np.int32)
      annotations = np.zeros((rows, n_ann), np.float32)
      batches[rows, length] = (tokens, annotations)
    tokens, annotations = batches[rows, length]
    model = models[length]
    t = time.perf_counter()
    if kind == 'infer':
      model.predict_on_batch([tokens, annotations])
    else:
      model.train_on_batch([tokens, annotations], [tokens[..., None], annotations])
    print(f'ok {time.perf_counter() - t:.6f}', flush=True)


if __name__ == '__main__':
  main()
