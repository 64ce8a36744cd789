"""Tokenizers against transformers' own, and the residue <-> token alignment."""

import numpy as np
import pytest
from transformers import BertTokenizer, EsmTokenizer

from ptmjax.data import tokenizer as tok


@pytest.fixture(params=['esm', 'protbert', 'ptmjax'])
def tokenizer(request):
  return tok.TOKENIZERS[request.param]()


def test_vocab_sizes():
  assert tok.esm().vocab_size == 33 and tok.esm().mask_id == 32 and tok.esm().cls_id == 0
  assert tok.protbert().vocab_size == 30 and tok.protbert().pad_id == 0


def test_esm_matches_transformers(tmp_path):
  ours = tok.esm()
  ours.save_vocab(tmp_path / 'vocab.txt')
  theirs = EsmTokenizer(str(tmp_path / 'vocab.txt'))
  for seq in ['MKTAYIAKQR', 'ACDEFGHIKLMNPQRSTVWYXBUZO', 'M']:
    assert ours.encode(seq).tolist() == theirs(seq)['input_ids']
  assert tok.from_vocab_file(tmp_path / 'vocab.txt', 'esm').vocab == ours.vocab


def test_protbert_matches_transformers(tmp_path):
  ours = tok.protbert()
  ours.save_vocab(tmp_path / 'vocab.txt')
  theirs = BertTokenizer(str(tmp_path / 'vocab.txt'), do_lower_case=False)
  seq = 'MKTAYIAKQRACDEFGHW'
  assert ours.encode(seq).tolist() == theirs(' '.join(seq))['input_ids']
  # ProtBert was trained with U/Z/O/B replaced by X.
  assert ours.encode('UZOB').tolist()[1:-1] == [ours.id('X')] * 4


def test_lowercase_and_unknown_letters(tokenizer):
  assert tokenizer.encode('mktay').tolist() == tokenizer.encode('MKTAY').tolist()
  assert tokenizer.encode('J').tolist()[1] == tokenizer.id(tokenizer.unk)


def test_label_on_residue_i_comes_out_at_residue_i(tokenizer):
  """The blog's bug: labels one position off because [CLS] was not skipped."""
  seq = 'MSTPKSYAS'
  labels = np.zeros((len(seq), 2), np.int8)
  labels[4, 0] = 1  # the K at residue 4
  labels[6, 1] = 1  # the Y at residue 6
  tokens, mask = tokenizer.batch([seq, 'MK'], length=16)
  token_labels = tokenizer.residue_labels_to_tokens(labels, 16)
  # The token carrying each label is the labelled residue itself.
  assert tokens[0, np.flatnonzero(token_labels[:, 0] == 1)[0]] == tokenizer.id('K')
  assert tokens[0, np.flatnonzero(token_labels[:, 1] == 1)[0]] == tokenizer.id('Y')
  assert (token_labels[0] == -1).all() and (token_labels[len(seq) + 1 :] == -1).all()
  # A per-token "model output" mapped back lands on the same residues.
  back = tokenizer.token_outputs_to_residues(token_labels, len(seq))
  np.testing.assert_array_equal(back, labels)
  assert (
    mask[0].sum() == len(seq) + tokenizer.num_special and mask[1].sum() == 2 + tokenizer.num_special
  )


def test_too_long_for_batch(tokenizer):
  with pytest.raises(ValueError, match='needs 12 tokens'):
    tokenizer.batch(['A' * 10], length=8)
