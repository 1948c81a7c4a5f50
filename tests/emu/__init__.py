"""Tests of the emulated CUDA device (a package, so its module names cannot collide with the
same names in tests/shim, which imports its siblings by plain name)."""
