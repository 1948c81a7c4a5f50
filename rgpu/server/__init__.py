"""The rgpu server: executes forwarded CUDA and Vulkan calls on this machine's GPUs."""
