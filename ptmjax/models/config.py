"""`ModelConfig`: the shape, vocabulary, heads and numerics of a ptmjax model.

Stored in every model folder (`ptmjax_model.json: model`), so its field names
are a file format: add fields with defaults, never rename one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

ACTIVATIONS = {
  'gelu': lambda x: jax.nn.gelu(x, approximate=False),  # erf GELU, as ESM and BERT use
  'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
  'relu': jax.nn.relu,
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


@dataclasses.dataclass(frozen=True)
class Traits:
  """What code outside `models/` may know of an encoder family, so that the train
  step, inference and embed ask the model instead of testing its family."""

  # The MLM corruption: 'replace' (ProteinBERT: random tokens of the whole vocabulary,
  # the loss on every real token) or 'mask' (BERT: 80/10/10 on chosen residues).
  corruption: str
  # No position embeddings and a cost linear in length: a protein is read whole
  # rather than in `max_len` windows.
  whole_sequences: bool
  # Per-protein outputs besides 'hidden' ('pooled': ProteinBERT's global track).
  protein_outputs: tuple[str, ...]
  # The original's padding mode (`padding='reference'`, `ptmjax embed --pad-to`).
  reference_padding: bool


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Encoder and heads. Defaults are an ESM-2-8M-sized encoder with ESM's vocabulary.

  Attributes:
    vocab_size: number of token ids.
    num_layers, embed_dim, num_heads, mlp_dim: transformer shape.
    max_len: most tokens per protein (specials included); longer proteins are
      cropped in training and covered by overlapping windows at inference.
    positions: 'rotary' (ESM-2) or 'learned' (BERT).
    pre_layer_norm: LayerNorm before attention/MLP (ESM) or after the residual (BERT).
    embed_layer_norm: LayerNorm on the embeddings (BERT).
    final_layer_norm: LayerNorm after the last layer (ESM's emb_layer_norm_after).
    num_token_types: BERT's token-type vocabulary (type 0 is always used); 0 for none.
    token_dropout: ESM's mask-token zeroing and embedding rescaling.
    layer_norm_eps: LayerNorm epsilon.
    activation: key of ACTIVATIONS.
    rope_theta: rotary base.
    dropout_rate, attention_dropout_rate: dropout in training.
    tie_embeddings: MLM decoder shares the token embedding matrix.
    pad_id, cls_id, eos_id, mask_id: special token ids (eos_id -1 when absent).
    num_ptm_types: per-residue PTM channels (ptmjax.data.NUM_TYPES).
    ptm_head: 'linear', 'mlp' (dense-gelu-LayerNorm-dense) or 'conv' (a 1-D
      convolution over residues that never crosses proteins, then linear).
    head_dim: hidden width of the 'mlp'/'conv' PTM head and of the count head.
    conv_width: kernel width of the 'conv' head (odd).
    dtype: compute dtype ('float32' or 'bfloat16'); parameters stay float32.
    remat: recompute each layer's activations in the backward pass.
    attention: 'xla' (one batched einsum-softmax-einsum, what XLA fuses well on
      GPU/TPU), 'rows' (blocks of heads of one batch row at a time with a
      flash-style backward that recomputes the probabilities: 2-5x faster and
      far less memory on CPU, where XLA's batched matmuls over [B, H, T, T]
      run out of cache), or
      'auto' (rows on CPU, xla elsewhere). Same numbers either way.
    family: 'transformer' (ESM-2 / BERT: the fields above) or 'proteinbert'
      (Brandes et al. 2022: a local track of width `embed_dim` with 1-D
      convolutions and a global track of width `global_dim`, `num_layers`
      blocks, global attention with `num_heads` heads of key width `key_dim`;
      no self-attention, cost linear in length; `ptmjax.models.proteinbert`).
    global_dim, key_dim: ProteinBERT's global width and global-attention key width.
    conv_kernel, wide_dilation: ProteinBERT's convolution kernel and the wide one's dilation.
    num_annotations: ProteinBERT's per-protein annotation vocabulary (0: no annotation
      input or head; 8,943 GO terms in the published model).
    padding: ProteinBERT only: 'masked' (padding never changes a protein's outputs) or
      'reference' (as the original: padding tokens are ordinary positions, so outputs
      depend on the padded length; for parity and the published weights).
  """

  vocab_size: int = 33
  num_layers: int = 6
  embed_dim: int = 320
  num_heads: int = 20
  mlp_dim: int = 1280
  max_len: int = 1026
  positions: str = 'rotary'
  pre_layer_norm: bool = True
  embed_layer_norm: bool = False
  final_layer_norm: bool = True
  num_token_types: int = 0
  token_dropout: bool = True
  layer_norm_eps: float = 1e-5
  activation: str = 'gelu'
  rope_theta: float = 10000.0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  tie_embeddings: bool = True
  pad_id: int = 1
  cls_id: int = 0
  eos_id: int = 2
  mask_id: int = 32
  num_ptm_types: int = 16
  ptm_head: str = 'linear'
  head_dim: int = 128
  conv_width: int = 9
  dtype: str = 'float32'
  remat: bool = False
  attention: str = 'auto'
  family: str = 'transformer'
  global_dim: int = 512
  key_dim: int = 64
  conv_kernel: int = 9
  wide_dilation: int = 5
  num_annotations: int = 0
  padding: str = 'masked'

  def __post_init__(self):
    if self.family not in ('transformer', 'proteinbert'):
      raise ValueError(f"family must be 'transformer' or 'proteinbert', not {self.family!r}")
    if self.padding not in ('masked', 'reference'):
      raise ValueError(f"padding must be 'masked' or 'reference', not {self.padding!r}")
    # Attention heads split the transformer's width, ProteinBERT's global width.
    width, name = (
      (self.global_dim, 'global_dim')
      if self.family == 'proteinbert'
      else (self.embed_dim, 'embed_dim')
    )
    if width % self.num_heads:
      raise ValueError(f'{name} {width} is not a multiple of num_heads {self.num_heads}')
    if self.positions not in ('rotary', 'learned'):
      raise ValueError(f"positions must be 'rotary' or 'learned', not {self.positions!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation {self.activation!r} not in {sorted(ACTIVATIONS)}')
    if self.dtype not in DTYPES:
      raise ValueError(f'dtype {self.dtype!r} not in {sorted(DTYPES)}')
    if self.ptm_head not in ('linear', 'mlp', 'conv'):
      raise ValueError(f"ptm_head must be 'linear', 'mlp' or 'conv', not {self.ptm_head!r}")
    if self.attention not in ('auto', 'xla', 'rows'):
      raise ValueError(f"attention must be 'auto', 'xla' or 'rows', not {self.attention!r}")
    if self.conv_width % 2 == 0:
      raise ValueError(f'conv_width must be odd, got {self.conv_width}')

  @property
  def head_size(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  def replace(self, **kwargs) -> ModelConfig:
    return dataclasses.replace(self, **kwargs)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f'unknown model config keys {unknown}')
    return cls(**dict(d))
