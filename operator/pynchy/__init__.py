"""Pynchy: a personal Claude assistant on Kubernetes."""

__version__ = "0.1.0"
