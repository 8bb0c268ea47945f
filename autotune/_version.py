"""The package version (one place; ``autotune --version`` and the fingerprint read it)."""

__version__ = "0.1.0"
