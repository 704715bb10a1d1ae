"""The package version (single source, read by hatchling)."""

__all__ = ["__version__"]

__version__ = "0.4.0"
