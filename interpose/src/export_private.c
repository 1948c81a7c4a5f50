/* The library-private export table 21318c60-9714-3248-8ca6-41ff7324c8f2
 * (research/cuda-remoting.md §4).
 *
 * cudart 13.1 and newer fetch it while initialising and fail every runtime call with
 * cudaErrorSymbolNotFound when the driver does not have it: cuda-python's runtime bindings
 * (cuda.bindings.runtime, which links such a cudart statically) stop at cudaGetDeviceCount.
 * Fetching it is all cudart does with it in the runtime paths measured; cuBLAS, cuFFT and cuDNN
 * call into it. Its layout is not public, so no slot is guessed at: each one reports itself
 * (`rgpu status` lists "cuGetExportTable 21318c60 slot N") and returns
 * CUDA_ERROR_NOT_SUPPORTED, so a library that calls one gets an error code it can report and
 * the slot is named, where a NULL entry would crash it. */
#include "rgpu_shim.h"

#define PRIVATE_SLOTS 128

#define TRAP(n)                                                                               \
    static CUresult slot##n(void)                                                             \
    {                                                                                         \
        rgpu_report_unsupported("cuGetExportTable 21318c60 slot " #n);                        \
        return CUDA_ERROR_NOT_SUPPORTED;                                                      \
    }
#define TRAP10(d)                                                                             \
    TRAP(d##0) TRAP(d##1) TRAP(d##2) TRAP(d##3) TRAP(d##4) TRAP(d##5) TRAP(d##6) TRAP(d##7)  \
    TRAP(d##8) TRAP(d##9)

TRAP(1) TRAP(2) TRAP(3) TRAP(4) TRAP(5) TRAP(6) TRAP(7) TRAP(8) TRAP(9)
TRAP10(1) TRAP10(2) TRAP10(3) TRAP10(4) TRAP10(5) TRAP10(6) TRAP10(7) TRAP10(8) TRAP10(9)
TRAP10(10) TRAP10(11)
TRAP(120) TRAP(121) TRAP(122) TRAP(123) TRAP(124) TRAP(125) TRAP(126) TRAP(127)

#define S(n) (void *)slot##n
#define S10(d) S(d##0), S(d##1), S(d##2), S(d##3), S(d##4), S(d##5), S(d##6), S(d##7), \
               S(d##8), S(d##9)

/* slot 0 is the table's size in bytes, as in the other export tables */
void *rgpu_context_identity_table[PRIVATE_SLOTS] = {
    (void *)(PRIVATE_SLOTS * sizeof(void *)),
    S(1), S(2), S(3), S(4), S(5), S(6), S(7), S(8), S(9),
    S10(1), S10(2), S10(3), S10(4), S10(5), S10(6), S10(7), S10(8), S10(9), S10(10), S10(11),
    S(120), S(121), S(122), S(123), S(124), S(125), S(126), S(127),
};
