"""Random ProteinBERT weights from a seed, with NumPy only: what the Keras reference and
the CI parity test both build (the test regenerates them instead of storing 16 M floats).

Every weight is random: kernels N(0, 1/fan_in), embeddings N(0, 1), LayerNorm gains
1 + N(0, 0.2^2), every bias and LayerNorm offset N(0, 0.2^2), so a conversion that
dropped or swapped any of them changes the outputs.
"""

import numpy as np


def random_weights(named_shapes, seed: int) -> list:
  """One float32 array per (Keras name, shape), in order."""
  rng = np.random.default_rng(seed)
  out = []
  for name, shape in named_shapes:
    leaf = name.rsplit('/', 1)[-1].split(':')[0]
    if leaf == 'gamma':
      w = 1 + 0.2 * rng.standard_normal(shape)
    elif leaf in ('beta', 'bias'):
      w = 0.2 * rng.standard_normal(shape)
    elif leaf == 'embeddings':
      w = rng.standard_normal(shape)
    else:  # kernels and the attention's Wq, Wk, Wv: fan-in is the input axis
      fan_in = shape[1] if leaf.startswith('W') else int(np.prod(shape[:-1]))  # W: [heads, in, k]
      w = rng.standard_normal(shape) / np.sqrt(fan_in)
    out.append(np.asarray(w, np.float32))
  return out
