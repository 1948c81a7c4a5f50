/* Host-visible device memory and output that must reach the application at synchronisation:
 * managed memory (cuMemAllocManaged), mapped page-locked host memory (CU_MEMHOSTALLOC_DEVICEMAP,
 * CU_MEMHOSTREGISTER_DEVICEMAP) and kernel printf. Shared by the files of the core that
 * launch, copy and synchronise (managed.c holds the implementation). */
#ifndef RGPU_COHERENCE_H
#define RGPU_COHERENCE_H

#include "rgpu_shim.h"

#pragma GCC visibility push(hidden)

/* Write the kernel printf output a synchronising call's reply carries to stdout. */
void rgpu_sync_output(rgpu_reply *r);

/* Before work that may read device memory (launches, copies, memsets, synchronisation): host
 * writes to managed and mapped memory go to the device. */
CUresult rgpu_coherent_push(void);
/* Work that may write device memory was queued (a kernel when `launch`): the host copies are
 * stale from now on. */
void rgpu_coherent_device_wrote(int launch);
/* After a synchronisation point: the host copies are refreshed if the device may have written
 * since the last refresh (pushing host writes first). Also drains pending printf output. */
CUresult rgpu_coherent_pull(void);
/* After a blocking copy: drain printf output (one synchronisation, only when there was device
 * work since the last drain), then as rgpu_coherent_pull. */
CUresult rgpu_coherent_after_blocking_copy(void);
/* A synchronising call succeeded: the printf output up to here has been written; refresh the
 * host copies (rgpu_coherent_pull). */
CUresult rgpu_synchronized(void);

enum { COH_MANAGED = 1, COH_HOSTALLOC = 2, COH_REGISTERED = 4, COH_GLOBAL = 8, COH_PINNED = 16 };
/* Is p (a host or a device address) inside a managed or mapped range: its device address and
 * kind (COH_*). */
int rgpu_coherent_find(const void *p, uint64_t *dev_addr, unsigned *kind);
/* Is device address p inside managed memory: that allocation's start and size. */
int rgpu_coherent_is_managed(uint64_t p, uint64_t *base, size_t *size);
/* Page-locked host memory the device uses too, at the same address (CU_MEMHOSTALLOC_DEVICEMAP). */
CUresult rgpu_coherent_host_alloc(void **pp, size_t bytesize, unsigned flags);
/* Plain page-locked memory (no DEVICEMAP) at the address of a dormant device copy, so kernels
 * can use it by its own address as under unified addressing: 1 when made, 0 to allocate it
 * as ordinary host memory (too large, no context, no room on the device). */
int rgpu_coherent_pinned_alloc(void **pp, size_t bytesize, unsigned flags);
/* Dormant page-locked memory holding p (or pointed into by a word of a launch's parameter
 * buffer) is kept coherent from now on. */
void rgpu_coherent_wake(const void *p);
void rgpu_coherent_wake_params(const uint8_t *params, size_t len);
/* Registered host memory [p, p+bytesize) gets a device copy (CU_MEMHOSTREGISTER_DEVICEMAP). */
CUresult rgpu_coherent_register(void *p, size_t bytesize, unsigned flags);
/* The host copy of a `__managed__` variable at device address dev (cuLibraryGetManaged). */
CUresult rgpu_coherent_global(uint64_t dev, size_t size, void **host);
/* Drop the range starting at host (by_host) or device address p; 0 when there is none. */
int rgpu_coherent_release(uint64_t p, int by_host);
/* cuDevicePrimaryCtxReset: the device's managed and mapped ranges end; so do its pool figures. */
void rgpu_coherent_device_reset(int dev);
void rgpu_pool_device_reset(int dev);
/* The device address of host address p in a mapped range, 0 if it is in none. */
uint64_t rgpu_coherent_device_address(const void *p);

/* Memory pools (pools.c): an allocation from `pool` (NULL: the current device's current pool),
 * and a free that takes it out of its pool's figures. */
CUresult rgpu_pool_alloc(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool);
void rgpu_pool_free(CUdeviceptr dptr);

/* Stream capture (graph.c). While rgpu_capturing(s), work queued on s becomes a graph node
 * (rgpu_capture_*) instead of running; event records and waits on capturing streams fork and
 * join captures (they return 1 when they did so, and the call has nothing else to do). */
int rgpu_capturing(CUstream s);
CUresult rgpu_capture_invalidate(CUstream s);
CUresult rgpu_capture_kernel(CUstream s, const CUDA_KERNEL_NODE_PARAMS *p);
CUresult rgpu_capture_copy(CUstream s, const CUDA_MEMCPY3D *c);
CUresult rgpu_capture_memset(CUstream s, const CUDA_MEMSET_NODE_PARAMS *m);
CUresult rgpu_capture_host(CUstream s, CUhostFn fn, void *userData);
CUresult rgpu_capture_alloc(CUstream s, CUdeviceptr *dptr, size_t size);
CUresult rgpu_capture_free(CUstream s, CUdeviceptr dptr);
/* Is p memory of a graph's allocation node (held by the graph: frees leave it alone). */
int rgpu_graph_owns(CUdeviceptr p);
int rgpu_capture_event_record(CUevent e, CUstream s, unsigned flags);
int rgpu_capture_wait_event(CUstream s, CUevent e, unsigned flags);
void rgpu_linear_copy3d(CUDA_MEMCPY3D *c, CUmemorytype dt, uint64_t dst, CUmemorytype st,
                        uint64_t src, size_t n);

#pragma GCC visibility pop

#endif
