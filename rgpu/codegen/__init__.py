"""Code generation for the shims and the wire: C and Python generated from the API specifications.

``python -m rgpu.codegen cuda`` regenerates ``interpose/generated/`` from ``cuda.h``;
``python -m rgpu.codegen build`` compiles the CUDA shim (``pip install`` does this too);
``python -m rgpu.codegen.vulkan`` regenerates the Vulkan schema from ``vk.xml``.
Generated files are committed, so building needs neither the CUDA toolkit nor the API headers.
"""
