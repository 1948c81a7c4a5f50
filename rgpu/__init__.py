"""rgpu: share GPUs over the network.

A server executes forwarded CUDA driver API and Vulkan calls on its GPUs; a client daemon
pools servers; shim libraries let unmodified applications use the pooled GPUs.
"""

__version__ = "0.1.0"
