"""The package's version: a leaf module, so that the stages recording it in provenance import nothing above them."""

__version__ = "0.3.0"
