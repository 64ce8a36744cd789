"""Amino-acid tokenizers per checkpoint family, and residue <-> token alignment.

Labels and model outputs live on residues; tokens add special tokens around
them. With a leading `<cls>`/`[CLS]`, residue i is token i + 1. Every place
that moves between the two goes through `Tokenizer.residue_slice`, so the
off-by-one of forgetting the shift for `[CLS]` cannot creep back in.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

# fair-esm / ESM-2 alphabet: 4 specials, 25 residue-like tokens, <null_1>, <mask>.
ESM_VOCAB = (
  ('<cls>', '<pad>', '<eos>', '<unk>')
  + tuple('LAGVSERTIDPKQNFYMHWCXBUZO.-')
  + ('<null_1>', '<mask>')
)
# ProtBert (Rostlab/prot_bert) vocab.txt order.
PROTBERT_VOCAB = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]') + tuple('LAGVESIKRDTPNQFYMHCWXUBZO')
# ProteinBERT (protein-bert package, tokenization.py): 20 amino acids + U + X, then
# <OTHER> (anything else: B, Z, O, lowercase), <START>, <END>, <PAD>; no mask token.
PROTEINBERT_VOCAB = tuple('ACDEFGHIKLMNPQRSTUVWXY') + ('<OTHER>', '<START>', '<END>', '<PAD>')
# ptmjax's own vocabulary for models trained from scratch.
PTMJAX_VOCAB = ('<pad>', '<cls>', '<eos>', '<unk>', '<mask>') + tuple('ACDEFGHIKLMNPQRSTVWYXUOBZ')


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Maps residues to token ids for one checkpoint family.

  Attributes:
    vocab: token strings in id order.
    cls, eos, pad, unk, mask: special token strings (eos and mask may be None:
      ProteinBERT has no mask token, its pretraining replaces tokens instead).
    rare_to_x: residues encoded as X (ProtBert was trained with U/Z/O/B -> X).
    fold_case: lowercase letters encode as their uppercase (ProteinBERT: they are <OTHER>).
  """

  vocab: tuple[str, ...]
  cls: str
  eos: str | None
  pad: str
  unk: str
  mask: str | None
  rare_to_x: str = ''
  fold_case: bool = True

  def __post_init__(self):
    ids = {t: i for i, t in enumerate(self.vocab)}
    if len(ids) != len(self.vocab):
      raise ValueError('vocabulary has repeated tokens')
    for name in (
      ('cls', 'pad', 'unk') + (('eos',) if self.eos else ()) + (('mask',) if self.mask else ())
    ):
      if getattr(self, name) not in ids:
        raise ValueError(f'special token {getattr(self, name)!r} ({name}) not in vocabulary')
    lut = np.full(256, ids[self.unk], np.int32)
    for token, i in ids.items():
      if len(token) == 1:
        lut[ord(token)] = i
        if self.fold_case:
          lut[ord(token.lower())] = i
    for aa in self.rare_to_x:
      lut[ord(aa)] = lut[ord(aa.lower())] = ids['X']
    object.__setattr__(self, '_ids', ids)
    object.__setattr__(self, '_lut', lut)

  # --- ids -----------------------------------------------------------------------
  def id(self, token: str) -> int:
    return self._ids[token]

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def cls_id(self) -> int:
    return self._ids[self.cls]

  @property
  def pad_id(self) -> int:
    return self._ids[self.pad]

  @property
  def mask_id(self) -> int:
    """The mask token's id, -1 for a family without one."""
    return self._ids[self.mask] if self.mask else -1

  @property
  def eos_id(self) -> int | None:
    return self._ids[self.eos] if self.eos else None

  @property
  def num_special(self) -> int:
    """Tokens added per protein: <cls> and, if the family has one, <eos>."""
    return 1 + (self.eos is not None)

  # --- encoding --------------------------------------------------------------
  def encode_residues(self, sequence: str) -> np.ndarray:
    """Residue letters -> ids, no special tokens (unknown letters -> unk)."""
    return self._lut[np.frombuffer(sequence.encode('ascii'), np.uint8)]

  def encode(self, sequence: str) -> np.ndarray:
    """<cls> residues [<eos>] as int32 ids."""
    parts = [[self.cls_id], self.encode_residues(sequence)]
    if self.eos is not None:
      parts.append([self.eos_id])
    return np.concatenate(parts).astype(np.int32)

  def residue_slice(self, num_residues: int) -> slice:
    """Token positions of the residues: residue i is token i + 1 (after <cls>)."""
    return slice(1, 1 + num_residues)

  def batch(self, sequences, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pads encoded sequences to `length` (default: the longest).

    Returns:
      (tokens int32 [B, length], mask bool [B, length]) with mask True on real
      tokens, specials included.
    """
    encoded = [self.encode(s) for s in sequences]
    length = max(map(len, encoded)) if length is None else length
    tokens = np.full((len(encoded), length), self.pad_id, np.int32)
    mask = np.zeros((len(encoded), length), bool)
    for i, e in enumerate(encoded):
      if len(e) > length:
        raise ValueError(f'sequence {i} needs {len(e)} tokens > length {length}')
      tokens[i, : len(e)], mask[i, : len(e)] = e, True
    return tokens, mask

  def residue_labels_to_tokens(self, labels: np.ndarray, length: int, fill=-1) -> np.ndarray:
    """Places per-residue labels [L, ...] at their token positions [length, ...].

    Special tokens and padding get `fill` (-1: ignored by the loss).
    """
    out = np.full((length,) + labels.shape[1:], fill, labels.dtype)
    out[self.residue_slice(len(labels))] = labels
    return out

  def token_outputs_to_residues(self, outputs: np.ndarray, num_residues: int) -> np.ndarray:
    """Per-token outputs [T, ...] -> per-residue outputs [num_residues, ...]."""
    return outputs[self.residue_slice(num_residues)]

  # --- files -----------------------------------------------------------------
  def save_vocab(self, path) -> None:
    pathlib.Path(path).write_text('\n'.join(self.vocab) + '\n')


def esm() -> Tokenizer:
  return Tokenizer(ESM_VOCAB, cls='<cls>', eos='<eos>', pad='<pad>', unk='<unk>', mask='<mask>')


def protbert() -> Tokenizer:
  return Tokenizer(
    PROTBERT_VOCAB,
    cls='[CLS]',
    eos='[SEP]',
    pad='[PAD]',
    unk='[UNK]',
    mask='[MASK]',
    rare_to_x='UZOB',
  )


def ptmjax_default() -> Tokenizer:
  return Tokenizer(PTMJAX_VOCAB, cls='<cls>', eos='<eos>', pad='<pad>', unk='<unk>', mask='<mask>')


def proteinbert() -> Tokenizer:
  return Tokenizer(
    PROTEINBERT_VOCAB, cls='<START>', eos='<END>', pad='<PAD>', unk='<OTHER>', mask=None,
    fold_case=False,
  )  # fmt: skip


TOKENIZERS = {
  'esm': esm,
  'protbert': protbert,
  'ptmjax': ptmjax_default,
  'proteinbert': proteinbert,
}


def from_vocab_file(path, family: str) -> Tokenizer:
  """Reads a checkpoint's `vocab.txt` (one token per line) for `family` ('esm' or 'protbert').

  Reading the vocabulary directly avoids transformers 5's tokenizer.json
  normaliser, which lower-cases ProtBert inputs into [UNK]s.
  """
  vocab = tuple(
    line.strip() for line in pathlib.Path(path).read_text().splitlines() if line.strip()
  )
  template = TOKENIZERS[family]()
  return dataclasses.replace(template, vocab=vocab)
