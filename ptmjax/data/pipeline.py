"""Input pipeline: TFDS data source -> grain -> batches of token-aligned arrays.

Batches are a pure function of (seed, epoch, batch index): the plan of an
epoch (which proteins go into which row) is computed from the protein lengths
alone, identically on every process, and each process then reads only the
rows of the global batch that belong to it. The iterator state is therefore
two integers, saved with every checkpoint, and a resumed run sees exactly the
batches an uninterrupted one would. (grain's streaming packers are
per-process and their state is harder to make identical across processes;
grain does the random-access reading and per-example preprocessing here.)

Three batch modes:
* 'pad': one protein per row, every row padded to `max_len` (the baseline
  the packing benchmark compares against).
* 'bucket': proteins of similar length share a batch (sorted within pools of
  32 batches), padded to a multiple of 64 tokens; one protein per row.
* 'pack': rows of `max_len` tokens filled first-fit with several proteins,
  told apart by `segment_ids` (1, 2, ...; 0 = padding), positions restart
  at 0 for each protein.

Proteins longer than `max_len` tokens are cropped to a random window in
training (`crop='random'`), to their start (`crop='start'`), or cut into
consecutive pieces that together cover every residue, the cut points shifted at
random each epoch (`crop='tile'`: an epoch then sees every residue once; with
one random window a 1,000-residue protein shows a quarter of its sites per
epoch). Evaluation runs whole proteins in overlapping windows instead
(`ptmjax.inference`).
"""

from __future__ import annotations

import dataclasses
import math

import grain
import numpy as np

from ptmjax.data import ptm_types
from ptmjax.data import tokenizer as tok
from ptmjax.data.sources import text

BUCKET = 64


@dataclasses.dataclass(frozen=True)
class Plan:
  """Rows of one global batch: for each row, (example index, crop start, residues) triples."""

  length: int
  rows: tuple[tuple[tuple[int, int, int], ...], ...]


class Pipeline:
  """Deterministic, resumable, process-sharded batches from a random-access source.

  Args:
    source: random-access examples with 'sequence' and 'labels' (a TFDS data source split).
    tokenizer: the model's tokenizer.
    batch_size: global rows per batch (all processes together).
    max_len: tokens per protein / per packed row, specials included.
    mode: 'pad', 'bucket' or 'pack'.
    seed: shuffling and cropping seed.
    crop: 'random', 'start' or 'tile'.
    max_segments: most proteins in one packed row.
    process_index, process_count: this process's share of each global batch.
  """

  def __init__(
    self,
    source,
    tokenizer: tok.Tokenizer,
    *,
    batch_size: int,
    max_len: int,
    mode: str = 'bucket',
    seed: int = 0,
    crop: str = 'random',
    max_segments: int = 8,
    process_index: int = 0,
    process_count: int = 1,
  ):
    if mode not in ('pad', 'bucket', 'pack'):
      raise ValueError(f"mode must be 'pad', 'bucket' or 'pack', not {mode!r}")
    if crop not in ('random', 'start', 'tile'):
      raise ValueError(f"crop must be 'random', 'start' or 'tile', not {crop!r}")
    if batch_size % process_count:
      raise ValueError(f'batch_size {batch_size} is not a multiple of {process_count} processes')
    self.dataset = grain.MapDataset.source(source)
    self.tokenizer = tokenizer
    self.batch_size, self.max_len, self.mode = batch_size, max_len, mode
    self.seed, self.crop, self.max_segments = seed, crop, max_segments
    self.process_index, self.process_count = process_index, process_count
    self.window = max_len - tokenizer.num_special
    # Lengths only (cheap to read); examples are read again, per process, when batched.
    self.lengths = np.array([len(text(ex['sequence'])) for ex in self.dataset], np.int64)
    if len(self.lengths) == 0:
      raise ValueError('empty data source')
    self._plans: dict[int, list[Plan]] = {}

  # --- the plan -------------------------------------------------------------------
  def _rng(self, *keys) -> np.random.Generator:
    return np.random.default_rng([self.seed, *keys])

  def _pieces(self, epoch: int, index: int) -> list[tuple[int, int, int]]:
    """(index, start, residues) of the pieces of protein `index` trained in `epoch`."""
    n = int(self.lengths[index])
    if n <= self.window:
      return [(index, 0, n)]
    if self.crop == 'start':
      return [(index, 0, self.window)]
    if self.crop == 'random':
      return [
        (index, int(self._rng(epoch, index, 1).integers(0, n - self.window + 1)), self.window)
      ]
    # 'tile': cuts every `window` residues from a random first cut, so no residue is
    # always near a cut (its context would always be one-sided there).
    first = int(self._rng(epoch, index, 1).integers(1, self.window + 1))
    cuts = [0, *range(first, n, self.window), n]
    return [(index, a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]

  def plan(self, epoch: int) -> list[Plan]:
    """The epoch's global batches (full batches only; the remainder waits for a later epoch)."""
    if epoch in self._plans:
      return self._plans[epoch]
    perm = self._rng(epoch, 0).permutation(len(self.lengths))
    # Items are (protein, start, residues): one per protein, or several with 'tile'.
    items = [piece for i in perm for piece in self._pieces(epoch, int(i))]
    special = self.tokenizer.num_special
    if self.mode == 'pad':
      plans = [
        Plan(self.max_len, tuple((item,) for item in items[b : b + self.batch_size]))
        for b in range(0, len(items) - self.batch_size + 1, self.batch_size)
      ]
    elif self.mode == 'bucket':
      pool = self.batch_size * 32
      batches = []
      for p in range(0, len(items), pool):
        chunk = sorted(items[p : p + pool], key=lambda item: item[2])
        for b in range(0, len(chunk) - self.batch_size + 1, self.batch_size):
          rows = tuple((item,) for item in chunk[b : b + self.batch_size])
          longest = max(r[0][2] for r in rows) + special
          batches.append(Plan(min(self.max_len, math.ceil(longest / BUCKET) * BUCKET), rows))
      order = self._rng(epoch, 2).permutation(len(batches))
      plans = [batches[i] for i in order]
    else:
      plans, carry = [], []
      pool = self.batch_size * 32
      for p in range(0, len(items), pool):
        # First-fit decreasing within a pool of proteins; proteins of rows that
        # do not fill a whole batch move on to the next pool.
        chunk = sorted(carry + items[p : p + pool], key=lambda item: -item[2])
        rows, room = [], []
        for item in chunk:
          need = item[2] + special
          slot = next(
            (r for r in range(len(rows)) if room[r] >= need and len(rows[r]) < self.max_segments),
            None,
          )
          if slot is None:
            rows.append([])
            room.append(self.max_len)
            slot = len(rows) - 1
          rows[slot].append(item)
          room[slot] -= need
        order = self._rng(epoch, 3, p).permutation(len(rows))
        rows = [rows[r] for r in order]
        full = len(rows) // self.batch_size * self.batch_size
        carry = [item for row in rows[full:] for item in row]
        for b in range(0, full, self.batch_size):
          plans.append(Plan(self.max_len, tuple(tuple(r) for r in rows[b : b + self.batch_size])))
      plans = [plans[i] for i in self._rng(epoch, 2).permutation(len(plans))]
    self._plans = {epoch: plans}  # keep one epoch: plans of big datasets are not tiny
    return plans

  def steps_per_epoch(self) -> int:
    return len(self.plan(0))

  # --- arrays ---------------------------------------------------------------------
  def _example(self, index: int):
    ex = self.dataset[index]
    return text(ex['sequence']), np.asarray(ex['labels'], np.int8)

  def batch(self, epoch: int, step: int) -> dict[str, np.ndarray]:
    """This process's rows of global batch `step` of `epoch`."""
    plan = self.plan(epoch)[step]
    local = self.batch_size // self.process_count
    rows = plan.rows[self.process_index * local : (self.process_index + 1) * local]
    return self.assemble(rows, plan.length)

  def assemble(self, rows, length: int) -> dict[str, np.ndarray]:
    t = self.tokenizer
    n_seg = self.max_segments if self.mode == 'pack' else 1
    c = ptm_types.NUM_TYPES
    out = {
      'tokens': np.full((len(rows), length), t.pad_id, np.int32),
      'segment_ids': np.zeros((len(rows), length), np.int32),
      'positions': np.zeros((len(rows), length), np.int32),
      # Each token's 0-based place in its whole protein (-1: special or padding): crops
      # start mid-protein, and N-terminal channels score only the first positions.
      'residue_index': np.full((len(rows), length), -1, np.int32),
      'labels': np.full((len(rows), length, c), ptm_types.UNKNOWN, np.int8),
      'counts': np.zeros((len(rows), n_seg, c), np.int32),
      'counts_valid': np.zeros((len(rows), n_seg, c), bool),
    }
    for r, row in enumerate(rows):
      offset = 0
      for s, (index, start, n) in enumerate(row):
        seq, labels = self._example(index)
        seq, labels = seq[start : start + n], labels[start : start + n]
        ids = t.encode(seq)
        span = slice(offset, offset + len(ids))
        out['tokens'][r, span] = ids
        out['segment_ids'][r, span] = s + 1
        out['positions'][r, span] = np.arange(len(ids))
        out['labels'][r, span] = t.residue_labels_to_tokens(labels, len(ids))
        out['residue_index'][r, span] = t.residue_labels_to_tokens(
          np.arange(start, start + n, dtype=np.int32), len(ids)
        )
        out['counts'][r, s] = (labels == ptm_types.POSITIVE).sum(0)
        out['counts_valid'][r, s] = (labels != ptm_types.UNKNOWN).all(0)
        offset += len(ids)
    return out

  def real_token_share(self, epoch: int = 0) -> float:
    """Share of non-padding tokens over the epoch's batches."""
    special = self.tokenizer.num_special
    real = total = 0
    for p in self.plan(epoch):
      real += sum(n + special for row in p.rows for _, _, n in row)
      total += len(p.rows) * p.length
    return real / total


class Iterator:
  """Batches from (epoch, step) onwards; `state` is what a checkpoint saves."""

  def __init__(self, pipeline: Pipeline, epoch: int = 0, step: int = 0):
    self.pipeline, self.epoch, self.step = pipeline, epoch, step

  @property
  def state(self) -> dict:
    return {'epoch': self.epoch, 'step': self.step}

  def restore(self, state: dict) -> None:
    self.epoch, self.step = int(state['epoch']), int(state['step'])

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.step >= len(self.pipeline.plan(self.epoch)):
      self.epoch, self.step = self.epoch + 1, 0
      if not self.pipeline.plan(self.epoch):
        raise ValueError(f'an epoch has no full batch of {self.pipeline.batch_size} rows')
    batch = self.pipeline.batch(self.epoch, self.step)
    self.step += 1
    return batch
