"""The emulated CPU CUDA device: `backend.EmuCudaBackend` (driver semantics) over `ptx` (the PTX
machine). Nothing is imported here so that loading the PTX machine alone stays cheap."""
