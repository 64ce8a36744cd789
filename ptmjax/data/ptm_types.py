"""The canonical PTM-type vocabulary: one label channel per type, shared by every source.

Every builder writes `labels[length, NUM_TYPES]` in this channel order, so a model
trained on ptmDB (stage 1) and fine-tuned on YAAM (stage 2) reads the same channel
for the same modification. The vocabulary is also stored in each dataset's
metadata, so a dataset built with an older vocabulary is detected, not misread.

Source-specific names (YAAM sections, UniProt MOD_RES notes, dbPTM types) are
mapped here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import re

UNKNOWN, NEGATIVE, POSITIVE = -1, 0, 1


@dataclasses.dataclass(frozen=True)
class PtmType:
  name: str
  # False for annotations that are not covalent modifications (ion binding,
  # catalytic residues): kept as channels, left out of the "any PTM" target.
  is_modification: bool = True
  description: str = ''
  # Defined at the protein's N-terminus only: scored at positions 1..max_position (1-based;
  # 2 covers the initiator Met and the residue after it once Met is removed). 0: anywhere.
  max_position: int = 0


PTM_TYPES: tuple[PtmType, ...] = (
  PtmType('phosphorylation', description='phospho-S/T/Y (and rarer H/D)'),
  PtmType('acetylation', description='lysine N6-acetylation'),
  PtmType('nt_acetylation', description='N-terminal (alpha-amino) acetylation', max_position=2),
  PtmType('methylation', description='K/R/H/Q/C... methylation, any degree'),
  PtmType('ubiquitination'),
  PtmType('sumoylation'),
  PtmType('succinylation', description='lysine N6-succinylation'),
  PtmType('oxidation', description='Met sulfoxide, Cys sulfenic/sulfinic/sulfonic acid'),
  PtmType('nitration', description='3-nitrotyrosine'),
  PtmType('glycosylation', description='N-, O- and C-linked'),
  PtmType('lipidation', description='palmitoylation, myristoylation, prenylation, GPI'),
  PtmType('disulfide', description='cysteine in a disulfide bond'),
  PtmType('other', description='every other covalent modification'),
  PtmType('calcium_binding', is_modification=False),
  PtmType('metal_binding', is_modification=False),
  PtmType('active_site', is_modification=False),
)
PTM_NAMES: tuple[str, ...] = tuple(t.name for t in PTM_TYPES)
NUM_TYPES = len(PTM_TYPES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(PTM_NAMES)}
MODIFICATION_CHANNELS: tuple[int, ...] = tuple(
  i for i, t in enumerate(PTM_TYPES) if t.is_modification
)

# --- YAAM -------------------------------------------------------------------
# One channel per YAAM section; YAAM never annotates `other`.
YAAM_SECTIONS: dict[str, str] = {
  'Phosphorylation': 'phosphorylation',
  'Methylation': 'methylation',
  'Acetylation': 'acetylation',
  'Ubiquitination': 'ubiquitination',
  'Succinylation': 'succinylation',
  'Oxidation': 'oxidation',
  'Nitration': 'nitration',
  'NtAcetylation': 'nt_acetylation',
  'Glycosylation': 'glycosylation',
  'Ca': 'calcium_binding',
  'Disulfide': 'disulfide',
  'Lipidation': 'lipidation',
  'ActiveSite': 'active_site',
  'Sumoylation': 'sumoylation',
  'Metal': 'metal_binding',
}

# --- UniProt MOD_RES ----------------------------------------------------------
# The MOD_RES feature covers single-residue chemical modifications. Cross-links
# (ubiquitin, SUMO: CROSSLNK), sugars (CARBOHYD), lipids (LIPID), disulfides
# (DISULFID) and binding/active sites are other feature keys, so a MOD_RES
# export says nothing about those channels: they stay unknown (-1).
MOD_RES_CHANNELS: tuple[str, ...] = (
  'phosphorylation',
  'acetylation',
  'nt_acetylation',
  'methylation',
  'succinylation',
  'oxidation',
  'nitration',
  'other',
)

# Ordered (pattern, channel) rules over the base note (lower case, qualifiers
# after ';' removed); the first match wins. The `other` rules name the known
# families so that a note matching none of them is reported as unrecognised.
_NOTE_RULES: tuple[tuple[str, str], ...] = (
  (r'^(di)?phospho(serine|threonine|tyrosine|histidine)$', 'phosphorylation'),
  (r'^(pros|tele)-phosphohistidine$|^4-aspartylphosphate$', 'phosphorylation'),
  (r'^n6-acetyllysine$', 'acetylation'),
  (r'^n-acetyl[a-z]+$|^n-alpha-acetyl', 'nt_acetylation'),
  (r'^n6-succinyllysine$', 'succinylation'),
  (r'sulf(en|in|on)ic acid|sulfoxide|persulfide', 'oxidation'),
  (r'nitrotyrosine', 'nitration'),
  (r'poly\(methylaminopropyl\)', 'other'),  # polyamine, not a methylation
  (r'methyl', 'methylation'),
  # Known families kept in `other`:
  (r'^n6-.*lysine$', 'other'),  # acylations and cofactors on lysine
  (r'citrulline|deamidated|nitroso|adp-ribo|5-glutamyl|hydroxy|allysine', 'other'),
  (r'succinyl\)cysteine|pantetheine|diphthamide|o-amp-|glutathionyl', 'other'),
  (r'blocked amino end|pyrrolidone carboxylic|fad |pyruvate|hypusine', 'other'),
)

_AMINO_ACID_WORDS: tuple[tuple[str, str], ...] = (
  ('isoleucine', 'I'),
  ('leucine', 'L'),
  ('serine', 'S'),
  ('threonine', 'T'),
  ('tyrosine', 'Y'),
  ('lysine', 'K'),
  ('allysine', 'K'),
  ('hypusine', 'K'),
  ('citrulline', 'R'),
  ('arginine', 'R'),
  ('alanine', 'A'),
  ('(ala)', 'A'),
  ('methionine', 'M'),
  ('glycine', 'G'),
  ('(gly)', 'G'),
  ('proline', 'P'),
  ('cysteine', 'C'),
  ('histidine', 'H'),
  ('diphthamide', 'H'),
  ('glutamine', 'Q'),
  ('asparagine', 'N'),
  ('glutamic acid', 'E'),
  ('glutamate', 'E'),
  ('5-glutamyl', 'E'),
  ('aspartic acid', 'D'),
  ('aspartate', 'D'),
  ('aspartyl', 'D'),
  ('valine', 'V'),
  ('phenylalanine', 'F'),
  ('tryptophan', 'W'),
)
_AMINO_ACID_RE = re.compile(
  '|'.join(re.escape(w) for w, _ in sorted(_AMINO_ACID_WORDS, key=lambda x: -len(x[0])))
)
_AMINO_ACID_LETTER = dict(_AMINO_ACID_WORDS)


def base_note(note: str) -> str:
  """'(Microbial infection) Phosphoserine; by CK2' -> 'Phosphoserine'."""
  note = re.sub(r'^\(Microbial infection\)\s*', '', note.strip())
  return note.split(';')[0].strip()


def map_mod_res_note(note: str) -> tuple[str, bool]:
  """Maps a UniProt MOD_RES note to a channel name.

  Returns:
    (channel, recognised). Unrecognised notes go to `other` and the caller
    reports them; nothing is dropped.
  """
  b = base_note(note).lower()
  for pattern, channel in _NOTE_RULES:
    if re.search(pattern, b):
      return channel, True
  return 'other', False


def note_residue(note: str) -> str | None:
  """The residue letter a MOD_RES note names ('Phosphoserine' -> 'S'), or None.

  'Pyrrolidone carboxylic acid' (from Q or E) and other notes that name no
  single residue return None and are not checked against the sequence.
  """
  b = base_note(note).lower()
  matches = list(_AMINO_ACID_RE.finditer(b))
  if not matches:
    return None
  return _AMINO_ACID_LETTER[matches[-1].group(0)]


# --- dbPTM ----------------------------------------------------------------------
# dbPTM's PTM type column (lower case) -> channel. Acetylation is split by
# residue in `map_dbptm_type`: lysine -> acetylation, otherwise N-terminal.
_DBPTM_RULES: tuple[tuple[str, str], ...] = (
  (r'^phosphorylation$', 'phosphorylation'),
  (r'^acetylation$', 'acetylation'),
  (r'^n-terminal acetylation$|^n-acetylation$', 'nt_acetylation'),
  (r'methylation$', 'methylation'),
  (r'^ubiquitination$|^ubiquitylation$', 'ubiquitination'),
  (r'^sumoylation$', 'sumoylation'),
  (r'^succinylation$', 'succinylation'),
  (r'^oxidation$|^sulfoxidation$', 'oxidation'),
  (r'^nitration$', 'nitration'),
  (r'glycosylation$|^glycation$', 'glycosylation'),
  (r'palmitoylation$|myristoylation$|prenylation$|farnesylation$', 'lipidation'),
  (r'geranylgeranylation$|^gpi-anchor$|^lipidation$|^s-diacylglycerol$', 'lipidation'),
  (r'^disulfide bond$', 'disulfide'),
  (
    r'^(malonylation|crotonylation|glutarylation|lactylation|butyrylation|'
    r'propionylation|2-hydroxyisobutyrylation|beta-hydroxybutyrylation|'
    r'hydroxylation|s-nitrosylation|citrullination|deamidation|'
    r'adp-ribosylation|amidation|sulfation|carboxylation|formylation|'
    r'glutathionylation|pyrrolidone carboxylic acid|neddylation|'
    r'carbamidation|decanoylation|octanoylation|iodination|'
    r'lipoylation|biotinylation|ampylation|blocked amino end|'
    r'd-glutamyl|glutamylation|succination|phosphatidylethanolamine amidation|'
    r's-carbamoylmethylcysteine cyclization)$',
    'other',
  ),
)


def map_dbptm_type(ptm_type: str, residue: str) -> tuple[str, bool]:
  """Maps a dbPTM type (e.g. 'Phosphorylation', 'N-linked Glycosylation')."""
  t = ptm_type.strip().lower()
  for pattern, channel in _DBPTM_RULES:
    if re.search(pattern, t):
      if channel == 'acetylation' and residue != 'K':
        return 'nt_acetylation', True
      return channel, True
  return 'other', False
