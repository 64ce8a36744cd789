"""The inference engine: a model over whole proteins of any length (windows, batching,
stitching). `ptmjax.predict` and `ptmjax.embed` are built on `run`.

A protein longer than the model's `max_len` tokens is cut into overlapping
windows of at most `max_len - specials` residues; each window is encoded as a
protein of its own (<cls> window <eos>, positions from 0). Every residue's
output is taken from the window in which it is most central (largest distance
to the window's nearer edge), so each residue is predicted exactly once and,
with the default half-window stride, never from the outer quarter of a window
unless it is near the protein's end.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from ptmjax.data import tokenizer as tok
from ptmjax.errors import UsageError

BUCKET = 64  # pad windows to a multiple of this many tokens: few distinct shapes to compile


def padded_length(n: int, cap: int | None = None) -> int:
  """Tokens a window of `n` tokens is padded to: a multiple of 64, never more than `cap`."""
  out = math.ceil(n / BUCKET) * BUCKET
  return min(out, cap) if cap else out


def ladder_length(n: int) -> int:
  """Tokens a whole protein of `n` tokens is padded to (ProteinBERT): 64, 128, 192, 256,
  then about 1.25x apart in multiples of 64 (320, 448, 576, 768, ..., 4,800, 6,016, ...).
  Few shapes to compile for a proteome; padding is exact with masked padding and costs
  at most a quarter more tokens, not a quadratic attention."""
  length = BUCKET
  while length < n:
    length = max(length + BUCKET, math.ceil(length * 1.25 / BUCKET) * BUCKET)
  return length


def window_spans(length: int, window: int, stride: int | None = None) -> list[tuple[int, int]]:
  """Residue spans [start, end) of overlapping windows covering [0, length).

  Windows start every `stride` residues (default window // 2); the last one is
  aligned to the end so every window is full length when the protein allows.
  """
  if window < 1:
    raise ValueError(f'window must be >= 1, got {window}')
  stride = max(1, window // 2) if stride is None else stride
  if not 1 <= stride <= window:
    raise UsageError(f'--stride {stride}: must be in [1, {window}] (the residues of a window)')
  if length <= window:
    return [(0, length)]
  starts = list(range(0, length - window, stride)) + [length - window]
  return [(s, s + window) for s in starts]


def window_owners(length: int, spans: Sequence[tuple[int, int]]) -> np.ndarray:
  """For each residue, the index of the span where it is most central (first on ties)."""
  pos = np.arange(length)
  centrality = np.full((len(spans), length), -1, np.int64)
  for i, (s, e) in enumerate(spans):
    inside = (pos >= s) & (pos < e)
    centrality[i, inside] = np.minimum(pos - s, e - 1 - pos)[inside]
  if (centrality.max(0) < 0).any():
    raise ValueError('spans do not cover every residue')
  return centrality.argmax(0)


@dataclasses.dataclass
class Stats:
  proteins: int = 0
  residues: int = 0
  windows: int = 0
  tokens: int = 0  # padded tokens run through the model
  seconds: float = 0.0

  def __add__(self, other: Stats) -> Stats:  # totals over the chunks of a streamed run
    return Stats(**{k: getattr(self, k) + getattr(other, k) for k in vars(self)})

  @property
  def residues_per_s(self) -> float:
    return self.residues / self.seconds if self.seconds else float('nan')


@functools.partial(jax.jit, static_argnums=(0, 1))
def _forward(graphdef, heads, state, tokens):
  out = nnx.merge(graphdef, state)(tokens, heads=heads)
  return jax.tree.map(lambda x: x.astype(np.float32), out)


def make_forward(model, heads: Sequence[str]) -> Callable:
  """A jitted forward pass: tokens [B, T] -> the requested outputs, float32.

  The graph definition is a static argument, so models of the same structure
  (e.g. the same checkpoint loaded twice) share compiled functions.
  """
  graphdef, state = nnx.split(model)
  heads = tuple(h for h in heads if h not in ('hidden', 'pooled'))
  return lambda tokens: _forward(graphdef, heads, state, tokens)


def run(
  model,
  tokenizer: tok.Tokenizer,
  sequences: Sequence[str],
  *,
  outputs: Sequence[str] = ('hidden',),
  max_len: int | None = None,
  stride: int | None = None,
  tokens_per_batch: int | None = None,
  progress: bool = True,
  pad_to: int | None = None,
) -> tuple[list[dict[str, np.ndarray]], Stats]:
  """Per-residue outputs for whole proteins.

  Args:
    model: a PtmModel (put in eval mode here).
    tokenizer: the model's tokenizer.
    sequences: residue strings.
    outputs: any of 'hidden' (embeddings), 'ptm' (logits), 'mlm' (LM logits) per
      residue, and for ProteinBERT 'pooled' (the global track) per protein.
    max_len: tokens per window, specials included (default: the model's). A
      ProteinBERT model runs whole proteins (its cost is linear in length) and
      ignores it.
    stride: residues between window starts (default: half a window).
    tokens_per_batch: padded tokens per forward pass (default: 2,048 on CPU,
      where small batches keep attention in cache, 16,384 on accelerators).
    progress: show a tqdm bar.
    pad_to: pad every row to exactly this many tokens (ProteinBERT's reference
      padding mode; longer proteins go in windows of pad_to tokens).

  Returns:
    (one dict per sequence mapping each output to a [length, ...] array,
    throughput statistics).
  """
  model.eval()
  whole = model.traits.whole_sequences and pad_to is None
  if pad_to is not None:
    max_len = pad_to
  elif whole:
    max_len = max(map(len, sequences), default=1) + tokenizer.num_special
  max_len = model.cfg.max_len if max_len is None else max_len
  if 'pooled' in outputs and 'pooled' not in model.traits.protein_outputs:
    raise ValueError("'pooled' is ProteinBERT's global track; average 'hidden' instead")
  window = max_len - tokenizer.num_special
  if window < 1:
    raise UsageError(f'--max-len {max_len} leaves no room for residues (at least 3)')
  forward = make_forward(model, outputs)
  if tokens_per_batch is None:
    tokens_per_batch = 2048 if jax.default_backend() == 'cpu' else 16384

  items = plan_windows(sequences, window, stride)
  stats = Stats(proteins=len(sequences), residues=sum(map(len, sequences)), windows=len(items))
  batches = plan_batches(
    items, tokenizer.num_special, max_len, tokens_per_batch, whole=whole, pad_to=pad_to
  )
  start = time.perf_counter()
  results = execute(forward, tokenizer, sequences, items, batches, outputs, stats, progress)
  stats.seconds = time.perf_counter() - start
  return results, stats


def plan_windows(sequences: Sequence[str], window: int, stride: int | None) -> list[tuple]:
  """(sequence index, start, end, owned residue mask within the window) per window: the
  residues each window's outputs are taken for (`window_owners`)."""
  items = []
  for i, seq in enumerate(sequences):
    spans = window_spans(len(seq), window, stride)
    owners = window_owners(len(seq), spans)
    for w, (s, e) in enumerate(spans):
      items.append((i, s, e, owners[s:e] == w))
  return items


def plan_batches(
  items, num_special: int, max_len: int, tokens_per_batch: int, *, whole: bool, pad_to
) -> list[tuple[int, int, list[int]]]:
  """(padded length, rows, window indices) per forward pass.

  Few batch shapes per padded length (rows = tokens_per_batch // length, or a power of
  two for the last batch), so each length compiles at most a few times. The padded
  length: `pad_to` (the reference padding), a ladder of lengths for whole proteins,
  else a multiple of 64 up to `max_len` (`padded_length`)."""

  def padded(k):
    n = items[k][2] - items[k][1] + num_special
    if pad_to is not None:
      return pad_to
    return ladder_length(n) if whole else padded_length(n, max_len)

  by_length: dict[int, list[int]] = {}
  for k in range(len(items)):
    by_length.setdefault(padded(k), []).append(k)
  batches = []
  for length, ks in sorted(by_length.items()):
    rows = max(1, tokens_per_batch // length)
    for j in range(0, len(ks), rows):
      chunk = ks[j : j + rows]
      # A short last batch is padded only to the next power of two rows (whole proteins:
      # to full rows, one compiled shape per length; at most one batch per length wasted).
      last = rows if whole else min(rows, 1 << (len(chunk) - 1).bit_length())
      batches.append((length, last, chunk))
  return batches


def execute(forward, tokenizer, sequences, items, batches, outputs, stats: Stats, progress):
  """Runs the planned batches and stitches each window's owned residues into per-protein
  arrays; counts the padded tokens in `stats`."""
  results: list[dict[str, np.ndarray]] = [{} for _ in sequences]
  bar = tqdm(
    total=stats.residues, unit='res', unit_scale=True, disable=not progress, desc='residues'
  )
  for length, rows, batch in batches:
    windows = [sequences[items[k][0]][items[k][1] : items[k][2]] for k in batch]
    tokens = np.full((rows, length), tokenizer.pad_id, np.int32)
    tokens[: len(batch)] = tokenizer.batch(windows, length)[0]
    out = jax.device_get(forward(tokens))
    stats.tokens += tokens.size
    for row, k in enumerate(batch):
      i, s, e, owned = items[k]
      for name in outputs:
        if name == 'pooled':  # one window per protein (no windows for ProteinBERT)
          results[i][name] = np.asarray(out[name][row, 0], np.float32)
          continue
        per_residue = tokenizer.token_outputs_to_residues(out[name][row], e - s)
        if name not in results[i]:
          results[i][name] = np.zeros((len(sequences[i]),) + per_residue.shape[1:], np.float32)
        results[i][name][s:e][owned] = per_residue[owned]
      bar.update(int(owned.sum()))
  bar.close()
  return results
