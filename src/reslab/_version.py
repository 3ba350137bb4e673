"""The package version, in a module of its own so any floor can import it."""

__version__ = "0.1.0"
