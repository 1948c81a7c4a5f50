"""Code generation for the shims: C declarations, stubs and tables from the API specifications.

``python -m rgpu.codegen cuda`` regenerates ``interpose/generated/`` from ``cuda.h``;
``python -m rgpu.codegen build`` compiles the CUDA shim (``pip install`` does this too).
Generated files are committed, so building needs neither the CUDA toolkit nor this package's
generators.
"""
