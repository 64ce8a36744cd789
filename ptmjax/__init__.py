"""ptmjax: per-residue post-translational modification prediction with protein LMs in JAX."""

__version__ = '0.1.0'
