"""CUDA driver status codes (`CUresult`) and the exception that carries them.

Every backend reports failures with the driver's own numbers and names so that a status travels
unchanged from the server to the app, and a reader can grep from an app's error message to the
code that raised it. The tables hold every `CUresult` of CUDA 13.0's `cuda.h` (names, values and
the first sentence of each header comment) plus the values cuda.bindings 13.4 added after 13.0.
"""

from __future__ import annotations

import enum


class CUresult(enum.IntEnum):
    """The driver API's status codes, names and values verbatim from cuda.h."""

    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_OUT_OF_MEMORY = 2
    CUDA_ERROR_NOT_INITIALIZED = 3
    CUDA_ERROR_DEINITIALIZED = 4
    CUDA_ERROR_PROFILER_DISABLED = 5
    CUDA_ERROR_PROFILER_NOT_INITIALIZED = 6
    CUDA_ERROR_PROFILER_ALREADY_STARTED = 7
    CUDA_ERROR_PROFILER_ALREADY_STOPPED = 8
    CUDA_ERROR_STUB_LIBRARY = 34
    CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER = 36
    CUDA_ERROR_DEVICE_UNAVAILABLE = 46
    CUDA_ERROR_MULTICAST_RESOURCE_FULL = 47
    CUDA_ERROR_NO_DEVICE = 100
    CUDA_ERROR_INVALID_DEVICE = 101
    CUDA_ERROR_DEVICE_NOT_LICENSED = 102
    CUDA_ERROR_INVALID_IMAGE = 200
    CUDA_ERROR_INVALID_CONTEXT = 201
    CUDA_ERROR_CONTEXT_ALREADY_CURRENT = 202
    CUDA_ERROR_MAP_FAILED = 205
    CUDA_ERROR_UNMAP_FAILED = 206
    CUDA_ERROR_ARRAY_IS_MAPPED = 207
    CUDA_ERROR_ALREADY_MAPPED = 208
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209
    CUDA_ERROR_ALREADY_ACQUIRED = 210
    CUDA_ERROR_NOT_MAPPED = 211
    CUDA_ERROR_NOT_MAPPED_AS_ARRAY = 212
    CUDA_ERROR_NOT_MAPPED_AS_POINTER = 213
    CUDA_ERROR_ECC_UNCORRECTABLE = 214
    CUDA_ERROR_UNSUPPORTED_LIMIT = 215
    CUDA_ERROR_CONTEXT_ALREADY_IN_USE = 216
    CUDA_ERROR_PEER_ACCESS_UNSUPPORTED = 217
    CUDA_ERROR_INVALID_PTX = 218
    CUDA_ERROR_INVALID_GRAPHICS_CONTEXT = 219
    CUDA_ERROR_NVLINK_UNCORRECTABLE = 220
    CUDA_ERROR_JIT_COMPILER_NOT_FOUND = 221
    CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222
    CUDA_ERROR_JIT_COMPILATION_DISABLED = 223
    CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY = 224
    CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC = 225
    CUDA_ERROR_CONTAINED = 226
    CUDA_ERROR_INSUFFICIENT_LOADER_VERSION = 227
    CUDA_ERROR_INVALID_SOURCE = 300
    CUDA_ERROR_FILE_NOT_FOUND = 301
    CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND = 302
    CUDA_ERROR_SHARED_OBJECT_INIT_FAILED = 303
    CUDA_ERROR_OPERATING_SYSTEM = 304
    CUDA_ERROR_INVALID_HANDLE = 400
    CUDA_ERROR_ILLEGAL_STATE = 401
    CUDA_ERROR_LOSSY_QUERY = 402
    CUDA_ERROR_NOT_FOUND = 500
    CUDA_ERROR_NOT_READY = 600
    CUDA_ERROR_ILLEGAL_ADDRESS = 700
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701
    CUDA_ERROR_LAUNCH_TIMEOUT = 702
    CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING = 703
    CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704
    CUDA_ERROR_PEER_ACCESS_NOT_ENABLED = 705
    CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE = 708
    CUDA_ERROR_CONTEXT_IS_DESTROYED = 709
    CUDA_ERROR_ASSERT = 710
    CUDA_ERROR_TOO_MANY_PEERS = 711
    CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712
    CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713
    CUDA_ERROR_HARDWARE_STACK_ERROR = 714
    CUDA_ERROR_ILLEGAL_INSTRUCTION = 715
    CUDA_ERROR_MISALIGNED_ADDRESS = 716
    CUDA_ERROR_INVALID_ADDRESS_SPACE = 717
    CUDA_ERROR_INVALID_PC = 718
    CUDA_ERROR_LAUNCH_FAILED = 719
    CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE = 720
    CUDA_ERROR_TENSOR_MEMORY_LEAK = 721
    CUDA_ERROR_NOT_PERMITTED = 800
    CUDA_ERROR_NOT_SUPPORTED = 801
    CUDA_ERROR_SYSTEM_NOT_READY = 802
    CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803
    CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE = 804
    CUDA_ERROR_MPS_CONNECTION_FAILED = 805
    CUDA_ERROR_MPS_RPC_FAILURE = 806
    CUDA_ERROR_MPS_SERVER_NOT_READY = 807
    CUDA_ERROR_MPS_MAX_CLIENTS_REACHED = 808
    CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED = 809
    CUDA_ERROR_MPS_CLIENT_TERMINATED = 810
    CUDA_ERROR_CDP_NOT_SUPPORTED = 811
    CUDA_ERROR_CDP_VERSION_MISMATCH = 812
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901
    CUDA_ERROR_STREAM_CAPTURE_MERGE = 902
    CUDA_ERROR_STREAM_CAPTURE_UNMATCHED = 903
    CUDA_ERROR_STREAM_CAPTURE_UNJOINED = 904
    CUDA_ERROR_STREAM_CAPTURE_ISOLATION = 905
    CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906
    CUDA_ERROR_CAPTURED_EVENT = 907
    CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD = 908
    CUDA_ERROR_TIMEOUT = 909
    CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE = 910
    CUDA_ERROR_EXTERNAL_DEVICE = 911
    CUDA_ERROR_INVALID_CLUSTER_SIZE = 912
    CUDA_ERROR_FUNCTION_NOT_LOADED = 913
    CUDA_ERROR_INVALID_RESOURCE_TYPE = 914
    CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION = 915
    CUDA_ERROR_KEY_ROTATION = 916
    CUDA_ERROR_STREAM_DETACHED = 917
    CUDA_ERROR_GRAPH_RECAPTURE_FAILURE = 918
    CUDA_ERROR_FABRIC_NOT_READY = 919
    CUDA_ERROR_UNKNOWN = 999


# First sentence of each cuda.h comment (a generic phrase for the post-13.0 values).
_SUMMARIES: dict[int, str] = {
    0: 'The API call returned with no errors',
    1: (
        'This indicates that one or more of the parameters passed to the API call is not within'
        ' an acceptable range of values'
    ),
    2: (
        'The API call failed because it was unable to allocate enough memory or other resources'
        ' to perform the requested operation'
    ),
    3: (
        'This indicates that the CUDA driver has not been initialized with cuInit() or that '
        'initialization has failed'
    ),
    4: 'This indicates that the CUDA driver is in the process of shutting down',
    5: 'This indicates profiler is not initialized for this run',
    6: (
        'Deprecated: This error return is deprecated as of CUDA 5.0. It is no longer an error '
        'to attempt to enable/disable the profiling via cuProfilerStart or cuProfilerStop '
        'without initialization'
    ),
    7: (
        'Deprecated: This error return is deprecated as of CUDA 5.0. It is no longer an error '
        'to call cuProfilerStart() when profiling is already enabled'
    ),
    8: (
        'Deprecated: This error return is deprecated as of CUDA 5.0. It is no longer an error '
        'to call cuProfilerStop() when profiling is already disabled'
    ),
    34: 'This indicates that the CUDA driver that the application has loaded is a stub library',
    36: (
        'This indicates that the API call requires a newer CUDA driver than the one currently '
        'installed'
    ),
    46: 'This indicates that requested CUDA device is unavailable at the current time',
    47: 'multicast resource full',
    100: 'This indicates that no CUDA-capable devices were detected by the installed CUDA driver',
    101: (
        'This indicates that the device ordinal supplied by the user does not correspond to a '
        'valid CUDA device or that the action requested is invalid for the specified device'
    ),
    102: 'This error indicates that the Grid license is not applied',
    200: 'This indicates that the device kernel image is invalid',
    201: 'This most frequently indicates that there is no context bound to the current thread',
    202: (
        'This indicated that the context being supplied as a parameter to the API call was '
        'already the active context'
    ),
    205: 'This indicates that a map or register operation has failed',
    206: 'This indicates that an unmap or unregister operation has failed',
    207: 'This indicates that the specified array is currently mapped and thus cannot be destroyed',
    208: 'This indicates that the resource is already mapped',
    209: 'This indicates that there is no kernel image available that is suitable for the device',
    210: 'This indicates that a resource has already been acquired',
    211: 'This indicates that a resource is not mapped',
    212: 'This indicates that a mapped resource is not available for access as an array',
    213: 'This indicates that a mapped resource is not available for access as a pointer',
    214: 'This indicates that an uncorrectable ECC error was detected during execution',
    215: (
        'This indicates that the CUlimit passed to the API call is not supported by the active '
        'device'
    ),
    216: (
        'This indicates that the CUcontext passed to the API call can only be bound to a single'
        ' CPU thread at a time but is already bound to a CPU thread'
    ),
    217: 'This indicates that peer access is not supported across the given devices',
    218: 'This indicates that a PTX JIT compilation failed',
    219: 'This indicates an error with OpenGL or DirectX context',
    220: 'This indicates that an uncorrectable NVLink error was detected during the execution',
    221: 'This indicates that the PTX JIT compiler library was not found',
    222: 'This indicates that the provided PTX was compiled with an unsupported toolchain',
    223: 'This indicates that the PTX JIT compilation was disabled',
    224: (
        'This indicates that the CUexecAffinityType passed to the API call is not supported by '
        'the active device'
    ),
    225: (
        'This indicates that the code to be compiled by the PTX JIT contains unsupported call '
        'to cudaDeviceSynchronize'
    ),
    226: (
        'This indicates that an exception occurred on the device that is now contained by the '
        "GPU's error containment capability"
    ),
    227: 'insufficient loader version',
    300: 'This indicates that the device kernel source is invalid',
    301: 'This indicates that the file specified was not found',
    302: 'This indicates that a link to a shared object failed to resolve',
    303: 'This indicates that initialization of a shared object failed',
    304: 'This indicates that an OS call failed',
    400: 'This indicates that a resource handle passed to the API call was not valid',
    401: (
        'This indicates that a resource required by the API call is not in a valid state to '
        'perform the requested operation'
    ),
    402: (
        'This indicates an attempt was made to introspect an object in a way that would discard'
        ' semantically important information'
    ),
    500: 'This indicates that a named symbol was not found',
    600: 'This indicates that asynchronous operations issued previously have not completed yet',
    700: (
        'While executing a kernel, the device encountered a load or store instruction on an '
        'invalid memory address'
    ),
    701: 'This indicates that a launch did not occur because it did not have appropriate resources',
    702: 'This indicates that the device kernel took too long to execute',
    703: 'This error indicates a kernel launch that uses an incompatible texturing mode',
    704: (
        'This error indicates that a call to cuCtxEnablePeerAccess() is trying to re-enable '
        'peer access to a context which has already had peer access to it enabled'
    ),
    705: (
        'This error indicates that cuCtxDisablePeerAccess() is trying to disable peer access '
        'which has not been enabled yet via cuCtxEnablePeerAccess()'
    ),
    708: (
        'This error indicates that the primary context for the specified device has already '
        'been initialized'
    ),
    709: (
        'This error indicates that the context current to the calling thread has been destroyed'
        ' using cuCtxDestroy, or is a primary context which has not yet been initialized'
    ),
    710: 'A device-side assert triggered during kernel execution',
    711: (
        'This error indicates that the hardware resources required to enable peer access have '
        'been exhausted for one or more of the devices passed to cuCtxEnablePeerAccess()'
    ),
    712: (
        'This error indicates that the memory range passed to cuMemHostRegister() has already '
        'been registered'
    ),
    713: (
        'This error indicates that the pointer passed to cuMemHostUnregister() does not '
        'correspond to any currently registered memory region'
    ),
    714: 'While executing a kernel, the device encountered a stack error',
    715: 'While executing a kernel, the device encountered an illegal instruction',
    716: (
        'While executing a kernel, the device encountered a load or store instruction on a '
        'memory address which is not aligned'
    ),
    717: (
        'While executing a kernel, the device encountered an instruction which can only operate'
        ' on memory locations in certain address spaces (global, shared, or local), but was '
        'supplied a memory address not belonging to an allowed address space'
    ),
    718: 'While executing a kernel, the device program counter wrapped its address space',
    719: 'An exception occurred on the device while executing a kernel',
    720: (
        'This error indicates that the number of blocks launched per grid for a kernel that was'
        ' launched via either cuLaunchCooperativeKernel or cuLaunchCooperativeKernelMultiDevice'
        ' exceeds the maximum number of blocks as allowed by '
        'cuOccupancyMaxActiveBlocksPerMultiprocessor or '
        'cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags times the number of '
        'multiprocessors as specified by the device attribute '
        'CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT'
    ),
    721: (
        'An exception occurred on the device while exiting a kernel using tensor memory: the '
        'tensor memory was not completely deallocated'
    ),
    800: 'This error indicates that the attempted operation is not permitted',
    801: (
        'This error indicates that the attempted operation is not supported on the current '
        'system or device'
    ),
    802: 'This error indicates that the system is not yet ready to start any CUDA work',
    803: (
        'This error indicates that there is a mismatch between the versions of the display '
        'driver and the CUDA driver'
    ),
    804: (
        'This error indicates that the system was upgraded to run with forward compatibility '
        'but the visible hardware detected by CUDA does not support this configuration'
    ),
    805: (
        'This error indicates that the MPS client failed to connect to the MPS control daemon '
        'or the MPS server'
    ),
    806: (
        'This error indicates that the remote procedural call between the MPS server and the '
        'MPS client failed'
    ),
    807: 'This error indicates that the MPS server is not ready to accept new MPS client requests',
    808: (
        'This error indicates that the hardware resources required to create MPS client have '
        'been exhausted'
    ),
    809: (
        'This error indicates the the hardware resources required to support device connections'
        ' have been exhausted'
    ),
    810: 'This error indicates that the MPS client has been terminated by the server',
    811: (
        'This error indicates that the module is using CUDA Dynamic Parallelism, but the '
        'current configuration, like MPS, does not support it'
    ),
    812: (
        'This error indicates that a module contains an unsupported interaction between '
        'different versions of CUDA Dynamic Parallelism'
    ),
    900: 'This error indicates that the operation is not permitted when the stream is capturing',
    901: (
        'This error indicates that the current capture sequence on the stream has been '
        'invalidated due to a previous error'
    ),
    902: (
        'This error indicates that the operation would have resulted in a merge of two '
        'independent capture sequences'
    ),
    903: 'This error indicates that the capture was not initiated in this stream',
    904: (
        'This error indicates that the capture sequence contains a fork that was not joined to '
        'the primary stream'
    ),
    905: (
        'This error indicates that a dependency would have been created which crosses the '
        'capture sequence boundary'
    ),
    906: (
        'This error indicates a disallowed implicit dependency on a current capture sequence '
        'from cudaStreamLegacy'
    ),
    907: (
        'This error indicates that the operation is not permitted on an event which was last '
        'recorded in a capturing stream'
    ),
    908: (
        'A stream capture sequence not initiated with the CU_STREAM_CAPTURE_MODE_RELAXED '
        'argument to cuStreamBeginCapture was passed to cuStreamEndCapture in a different '
        'thread'
    ),
    909: 'This error indicates that the timeout specified for the wait operation has lapsed',
    910: (
        'This error indicates that the graph update was not performed because it included '
        'changes which violated constraints specific to instantiated graph update'
    ),
    911: (
        'This indicates that an async error has occurred in a device outside of CUDA. If CUDA '
        "was waiting for an external device's signal before consuming shared data, the external"
        ' device signaled an error indicating that the data is not valid for consumption'
    ),
    912: 'Indicates a kernel launch error due to cluster misconfiguration',
    913: (
        'Indiciates a function handle is not loaded when calling an API that requires a loaded '
        'function'
    ),
    914: (
        'This error indicates one or more resources passed in are not valid resource types for '
        'the operation'
    ),
    915: (
        'This error indicates one or more resources are insufficient or non-applicable for the '
        'operation'
    ),
    916: 'This error indicates that an error happened during the key rotation sequence',
    917: 'stream detached',
    918: 'graph recapture failure',
    919: 'fabric not ready',
    999: 'This indicates that an unknown internal error has occurred',
}

# What libcuda's cuGetErrorString answers for the codes apps meet in practice; the others fall
# back to the header's summary, which says the same thing at more length.
_DRIVER_STRINGS: dict[int, str] = {
    0: "no error",
    1: "invalid argument",
    2: "out of memory",
    3: "initialization error",
    4: "driver shutting down",
    5: "profiler disabled",
    100: "no CUDA-capable device is detected",
    101: "invalid device ordinal",
    200: "device kernel image is invalid",
    201: "invalid device context",
    209: "no kernel image is available for execution on the device",
    218: "a PTX JIT compilation failed",
    300: "invalid source",
    301: "file not found",
    400: "invalid resource handle",
    401: "the operation cannot be performed in the present state",
    500: "named symbol not found",
    600: "device not ready",
    700: "an illegal memory access was encountered",
    701: "too many resources requested for launch",
    709: "context is destroyed",
    716: "misaligned address",
    719: "unspecified launch failure",
    800: "operation not permitted",
    801: "operation not supported",
    999: "unknown error",
}


def cuGetErrorName(code: int) -> str:
    """The enum name of a status, as `cuGetErrorName` gives it; unknown values raise
    CudaError(CUDA_ERROR_INVALID_VALUE) because the driver answers that status for them."""
    try:
        return CUresult(code).name
    except ValueError:
        raise CudaError(CUresult.CUDA_ERROR_INVALID_VALUE, f"unknown CUresult {code}") from None


def cuGetErrorString(code: int) -> str:
    """The human description of a status, as `cuGetErrorString` gives it."""
    if code not in _SUMMARIES:
        raise CudaError(CUresult.CUDA_ERROR_INVALID_VALUE, f"unknown CUresult {code}")
    return _DRIVER_STRINGS.get(code, _SUMMARIES[code])


class CudaError(Exception):
    """A driver-API failure: `.code` is the CUresult the app's call must return, the message one
    line naming the cause (and the fix where the user can apply one)."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = CUresult(code)
        self.message = message or cuGetErrorString(int(code))
        super().__init__(f"{self.code.name}: {self.message}")

    def __reduce__(self) -> tuple[type[CudaError], tuple[int, str]]:
        return (CudaError, (int(self.code), self.message))
