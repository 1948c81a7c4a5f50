// Shared by the test programs: fail loudly with the runtime's error name.
#pragma once
#include <cstdio>

#define CHECK(x)                                                                        \
    do {                                                                                \
        cudaError_t e_ = (x);                                                           \
        if (e_ != cudaSuccess) {                                                        \
            printf("FAIL %s: %s (%d)\n", #x, cudaGetErrorName(e_), (int)e_);            \
            return 1;                                                                   \
        }                                                                               \
    } while (0)
