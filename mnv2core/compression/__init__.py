"""Compression of trained models: unstructured pruning and the lottery ticket, structured
channel pruning, and low-rank factorisation with spectral analysis. Plain functions."""
