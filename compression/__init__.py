"""Compression of float detectors (torch): ADMM low-bit quantization, pruning, calibration, export.

(Its contents arrive with the compression capability, issue #4.)
"""
