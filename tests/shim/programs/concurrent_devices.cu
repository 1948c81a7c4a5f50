// Two host threads drive two devices of the pool: while one waits in cudaStreamSynchronize
// for a long kernel on device 0, the other keeps making round trips to device 1. With devices
// on different servers, the second thread must not wait for the first one's reply.
#include <atomic>
#include <chrono>
#include <thread>
#include "common.h"

__global__ void spin(int n, int *out)
{
    int x = 0;
    for (int i = 0; i < n; i++)
        x = x * 3 + i;
    *out = x;
}

static double seconds_since(std::chrono::steady_clock::time_point t0)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200000;
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    if (count < 2) {
        printf("needs two devices\n");
        return 1;
    }
    std::atomic<int> syncing{0};
    double slow_done = 0, quick_done = 0;
    int rc_slow = 0, rc_quick = 0, quick_calls = 0;
    auto t0 = std::chrono::steady_clock::now();
    std::thread slow([&] {
        int *d;
        if (cudaSetDevice(0) || cudaMalloc(&d, sizeof(int))) {
            rc_slow = 1;
            return;
        }
        spin<<<1, 1>>>(n, d);
        syncing = 1;
        rc_slow = cudaDeviceSynchronize() != cudaSuccess;
        slow_done = seconds_since(t0);
    });
    std::thread quick([&] {
        int *d, h = 0;
        if (cudaSetDevice(1) || cudaMalloc(&d, sizeof(int))) {
            rc_quick = 1;
            return;
        }
        while (!syncing)
            std::this_thread::yield();
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        for (int i = 0; i < 20; i++, quick_calls++)
            if (cudaMemcpy(d, &i, sizeof i, cudaMemcpyHostToDevice) ||
                cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost) || h != i)
                rc_quick = 1;
        quick_done = seconds_since(t0);
    });
    slow.join();
    quick.join();
    printf("slow sync done at %.2f s, %d quick round trips done at %.2f s\n", slow_done,
           quick_calls, quick_done);
    bool ok = !rc_slow && !rc_quick && quick_done < slow_done;
    printf(ok ? "PASSED\n" : "FAILED\n");
    return !ok;
}
