"""redline: a verified hotline between two stations that do not trust each other."""

__version__ = "0.1.0"
