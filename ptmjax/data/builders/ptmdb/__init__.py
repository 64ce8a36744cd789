"""ptmDB (multi-organism PTM sites) TFDS builder."""
