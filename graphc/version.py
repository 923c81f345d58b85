"""graphc's version: one source for the package metadata, `gc.__version__` and cache keys."""

__version__ = "0.1.0"
