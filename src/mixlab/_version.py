"""The package version (one place; the lowest layer, so the results store can record it)."""
__version__ = "0.1.0"
