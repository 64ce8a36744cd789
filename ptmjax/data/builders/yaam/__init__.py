"""YAAM (Yeast Amino Acid Modifications) TFDS builder."""
