"""Windows over long proteins, stitching, `ptmjax convert-hf` and `ptmjax embed` end to end."""

import jax
import numpy as np
import pytest
import torch

from ptmjax import checkpoint, cli, inference
from ptmjax.data import tokenizer as tok
from ptmjax.data.records import InputError, read_proteins
from ptmjax.models import ModelConfig, create_model


@pytest.mark.parametrize(
  'length,window,stride', [(10, 10, None), (11, 10, None), (100, 16, 8), (37, 8, 3), (5, 1, 1)]
)
def test_window_spans_cover_and_owners_are_most_central(length, window, stride):
  spans = inference.window_spans(length, window, stride)
  assert spans[0][0] == 0 and spans[-1][1] == length
  assert all(e - s == min(window, length) for s, e in spans)
  owners = inference.window_owners(length, spans)
  for r in range(length):
    s, e = spans[owners[r]]
    assert s <= r < e
    best = max(min(r - s2, e2 - 1 - r) for s2, e2 in spans if s2 <= r < e2)
    assert min(r - s, e - 1 - r) == best


def test_stitched_windows_equal_whole_protein_without_context():
  """With no layers (no context), windowed outputs must equal the whole-protein ones exactly."""
  cfg = ModelConfig(
    num_layers=0, embed_dim=16, num_heads=2, mlp_dim=16, max_len=512, token_dropout=False
  )
  model, t = create_model(cfg), tok.esm()
  rng = np.random.default_rng(0)
  seqs = [''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), n)) for n in (5, 40, 97, 300)]
  whole, _ = inference.run(model, t, seqs, outputs=('hidden', 'ptm'), progress=False)
  windowed, stats = inference.run(
    model, t, seqs, outputs=('hidden', 'ptm'), max_len=18, stride=5, progress=False
  )
  assert stats.windows > len(seqs)
  for a, b, s in zip(whole, windowed, seqs, strict=True):
    assert a['hidden'].shape == (len(s), 16) and a['ptm'].shape == (len(s), 16)
    np.testing.assert_allclose(a['hidden'], b['hidden'], atol=1e-6)
    np.testing.assert_allclose(a['ptm'], b['ptm'], atol=1e-6)


def test_windows_use_the_most_central_window():
  """With context, each residue's output is the one of the window where it is most central."""
  cfg = ModelConfig(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=16, max_len=512)
  model, t = create_model(cfg), tok.esm()
  seq = 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ'
  (res,), _ = inference.run(model, t, [seq], max_len=22, stride=10, progress=False)
  spans = inference.window_spans(len(seq), 20, 10)
  owners = inference.window_owners(len(seq), spans)
  model.eval()
  for w, (s, e) in enumerate(spans):
    tokens, _ = t.batch([seq[s:e]])
    alone = np.asarray(model(tokens)['hidden'][0, 1 : 1 + e - s])
    owned = owners[s:e] == w
    np.testing.assert_allclose(res['hidden'][s:e][owned], alone[owned], atol=1e-5)


def test_convert_and_embed_cli_match_transformers(hf_checkpoints, tmp_path, capsys):
  path, hf_model = hf_checkpoints['esm_mlm']
  out_dir = tmp_path / 'ckpt'
  assert cli.main(['convert-hf', '--model', str(path), '--out', str(out_dir)]) == 0
  assert (out_dir / checkpoint.MODEL_FILE).is_file()
  fasta = tmp_path / 'in.fasta'
  fasta.write_text(
    '>sp|A|first protein\nmktayiakqr\nqisfvk\n>B\nMSTNPKPQRKTKRNTNRRPQDVKFPGG\n>C\nMS\n'
  )
  npz = tmp_path / 'emb.npz'
  assert (
    cli.main(['embed', '--checkpoint', str(out_dir), '--fasta', str(fasta), '--out', str(npz)]) == 0
  )
  assert 'embedded 3 proteins, 45 residues' in capsys.readouterr().out
  emb = np.load(npz)
  assert list(emb['ids']) == ['sp|A|first', 'B', 'C']
  t = tok.esm()
  for pid, seq in (
    ('sp|A|first', 'MKTAYIAKQRQISFVK'),
    ('B', 'MSTNPKPQRKTKRNTNRRPQDVKFPGG'),
    ('C', 'MS'),
  ):
    with torch.no_grad():
      ref = (
        hf_model.esm(torch.tensor(t.encode(seq)[None], dtype=torch.long))
        .last_hidden_state[0]
        .numpy()
      )
    residues = emb[f'residues/{pid}']
    assert residues.shape == (len(seq), 32)
    np.testing.assert_allclose(residues, ref[1 : 1 + len(seq)], atol=1e-4)
    np.testing.assert_allclose(emb[f'pooled/{pid}'], ref[1 : 1 + len(seq)].mean(0), atol=1e-4)


def test_embed_long_protein_in_windows(hf_checkpoints, tmp_path):
  out_dir = tmp_path / 'ckpt'
  cli.main(['convert-hf', '--model', str(hf_checkpoints['bert_mlm'][0]), '--out', str(out_dir)])
  fasta = tmp_path / 'long.fasta'
  seq = 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ' * 5
  fasta.write_text(f'>long\n{seq}\n')
  npz = tmp_path / 'emb.npz'
  cli.main(
    [
      'embed',
      '--checkpoint',
      str(out_dir),
      '--fasta',
      str(fasta),
      '--out',
      str(npz),
      '--max-len',
      '64',
    ]
  )
  emb = np.load(npz)['residues/long']
  assert emb.shape == (len(seq), 32) and np.isfinite(emb).all()


@pytest.mark.parametrize(
  'text,line,problem',
  [
    ('>a\nMKV\n>b\nMK1V\n', 3, "record 'b': sequence has non-amino-acid characters ['1']"),
    ('>a\nMKV\n>b\n\n>c\nMK\n', 3, "record 'b': empty sequence"),
    ('>a\nMKV\n>a desc\nMK\n', 3, "record 'a' repeats the id of line 1"),
  ],
)
def test_embed_fasta_errors_name_the_record(tmp_path, text, line, problem):
  fasta = tmp_path / 'bad.fasta'
  fasta.write_text(text)
  with pytest.raises(InputError) as e:
    read_proteins(fasta)
  assert str(e.value).startswith(f'{fasta}:{line}: {problem}')


def test_checkpoint_round_trip_and_plain_orbax_read(tmp_path):
  """A model folder restores to the same outputs, and plain Orbax reads its params as NumPy."""
  import orbax.checkpoint as ocp

  cfg = ModelConfig(num_layers=2, embed_dim=16, num_heads=2, mlp_dim=32, ptm_head='mlp', head_dim=8)
  model, t = create_model(cfg, seed=5), tok.esm()
  checkpoint.save_model(tmp_path / 'm', model, t, {'note': 'test'})
  restored, t2, meta = checkpoint.load_model(tmp_path / 'm')
  assert t2 == t and meta['info'] == {'note': 'test'} and restored.cfg == cfg
  tokens, _ = t.batch(['MKTAYIAKQR', 'MS'])
  model.eval()
  restored.eval()
  np.testing.assert_array_equal(
    np.asarray(model(tokens)['ptm']), np.asarray(restored(tokens)['ptm'])
  )

  # What a user does without ptmjax: Orbax alone, arrays as NumPy.
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(tmp_path / 'm' / 'params').item_metadata.tree
  params = ckptr.restore(
    tmp_path / 'm' / 'params',
    args=ocp.args.PyTreeRestore(
      restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    ),
  )
  kernel = params['encoder']['layers']['0']['attention']['query']['kernel']
  assert isinstance(kernel, np.ndarray) and kernel.shape == (16, 2, 8)
  np.testing.assert_array_equal(
    kernel, np.asarray(model.encoder.layers[0].attention.query.kernel[...])
  )


def test_load_model_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a ptmjax model folder'):
    checkpoint.load_model(tmp_path)


def test_ladder_lengths_for_whole_proteins():
  """ProteinBERT's whole-protein padding: a multiple of 64, at least the protein, at most
  a quarter (plus one bucket) more, and few distinct shapes over a proteome's lengths."""
  lengths = [inference.ladder_length(n) for n in range(1, 36_000)]
  for n, padded in enumerate(lengths, 1):
    assert padded % 64 == 0 and n <= padded <= max(1.25 * n + 64, 128)
  assert len(set(lengths[:4912])) == 17  # up to the yeast proteome's longest, 4,910 + 2 tokens
