// CUDA graphs as real programs use them: a stream capture that forks onto a second stream
// through events and joins back (memsets, kernels, a host function, a copy to the host),
// launched repeatedly; an explicit graph of memset, kernel and 1D memcpy nodes whose kernel
// parameters change in the executable graph and through cudaGraphExecUpdate; cudaGraphClone;
// child graphs and event nodes, a graph launched into a capture; cudaMallocAsync/cudaFreeAsync
// captured as memory nodes.
#include <cstdlib>
#include <cstring>

#include "common.h"

#define CK(x) CHECK(x)
#define EXPECT(c)                                                      \
    do {                                                               \
        if (!(c)) {                                                    \
            printf("FAIL line %d: %s\n", __LINE__, #c);                \
            return 1;                                                  \
        }                                                              \
    } while (0)

__global__ void add(float *a, float v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        a[i] += v;
}

__global__ void mul(float *a, float v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        a[i] *= v;
}

__global__ void sum2(const float *a, const float *b, float *c, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

static int host_calls = 0;
static void CUDART_CB hostfn(void *p) { host_calls += (int)(long)p; }

int main() {
  int n = 1000; size_t sz = n*4; float *a, *b, *c, *h = (float*)malloc(sz);
  CK(cudaMalloc(&a, sz)); CK(cudaMalloc(&b, sz)); CK(cudaMalloc(&c, sz));
  cudaStream_t s1, s2; CK(cudaStreamCreate(&s1)); CK(cudaStreamCreate(&s2));
  cudaEvent_t fork, join; CK(cudaEventCreate(&fork)); CK(cudaEventCreate(&join));
  cudaGraph_t g; cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureStatus cs; CK(cudaStreamIsCapturing(s1, &cs)); EXPECT(cs == cudaStreamCaptureStatusActive);
  CK(cudaStreamIsCapturing(s2, &cs)); EXPECT(cs == cudaStreamCaptureStatusNone);
  CK(cudaMemsetAsync(a, 0, sz, s1));
  CK(cudaEventRecord(fork, s1));
  CK(cudaStreamWaitEvent(s2, fork, 0));
  CK(cudaMemsetAsync(b, 0, sz, s2));
  add<<<4,256,0,s2>>>(b, 5.0f, n);
  add<<<4,256,0,s1>>>(a, 1.0f, n);
  CK(cudaEventRecord(join, s2));
  CK(cudaStreamWaitEvent(s1, join, 0));
  sum2<<<4,256,0,s1>>>(a, b, c, n);
  CK(cudaLaunchHostFunc(s1, hostfn, (void*)1));
  CK(cudaMemcpyAsync(h, c, sz, cudaMemcpyDeviceToHost, s1));
  CK(cudaStreamEndCapture(s1, &g));
  CK(cudaStreamIsCapturing(s2, &cs)); EXPECT(cs == cudaStreamCaptureStatusNone);
  size_t nn = 0, ne = 0; CK(cudaGraphGetNodes(g, NULL, &nn)); CK(cudaGraphGetEdges(g, NULL, NULL, NULL, &ne));
  printf("nodes %zu edges %zu\n", nn, ne); EXPECT(nn == 7); EXPECT(ne == 7);
  size_t nr = 0; CK(cudaGraphGetRootNodes(g, NULL, &nr)); EXPECT(nr == 1);
  CK(cudaGraphInstantiateWithFlags(&ge, g, 0));
  for (int it = 0; it < 5; it++) {
    memset(h, 0, sz);
    CK(cudaGraphLaunch(ge, s1));
    CK(cudaStreamSynchronize(s1));
    for (int i = 0; i < n; i++) EXPECT(h[i] == 6.0f);
  }
  EXPECT(host_calls == 5);
  // explicit graph with memset, memcpy, kernel param update
  cudaGraph_t g2; CK(cudaGraphCreate(&g2, 0));
  cudaGraphNode_t ms, k1, k2, cp;
  cudaMemsetParams mp = {}; mp.dst = a; mp.value = 0; mp.elementSize = 4; mp.width = n; mp.height = 1;
  CK(cudaGraphAddMemsetNode(&ms, g2, NULL, 0, &mp));
  float v1 = 2.0f; int nv = n; void *args1[] = {&a, &v1, &nv};
  cudaKernelNodeParams kp = {}; kp.func = (void*)add; kp.gridDim = dim3(4); kp.blockDim = dim3(256); kp.kernelParams = args1;
  CK(cudaGraphAddKernelNode(&k1, g2, &ms, 1, &kp));
  float v2 = 10.0f; void *args2[] = {&a, &v2, &nv};
  kp.func = (void*)mul; kp.kernelParams = args2;
  CK(cudaGraphAddKernelNode(&k2, g2, &k1, 1, &kp));
  CK(cudaGraphAddMemcpyNode1D(&cp, g2, &k2, 1, h, a, sz, cudaMemcpyDeviceToHost));
  cudaGraphExec_t ge2; CK(cudaGraphInstantiate(&ge2, g2, 0));
  CK(cudaGraphLaunch(ge2, s2)); CK(cudaStreamSynchronize(s2));
  for (int i = 0; i < n; i++) EXPECT(h[i] == 20.0f);
  float v3 = 100.0f; void *args3[] = {&a, &v3, &nv}; kp.kernelParams = args3;
  CK(cudaGraphExecKernelNodeSetParams(ge2, k2, &kp));
  CK(cudaGraphLaunch(ge2, s2)); CK(cudaStreamSynchronize(s2));
  for (int i = 0; i < n; i++) EXPECT(h[i] == 200.0f);
  cudaKernelNodeParams got; CK(cudaGraphKernelNodeGetParams(k2, &got)); EXPECT(*(float*)got.kernelParams[1] == 10.0f);
  v1 = 3.0f; kp.func = (void*)add; kp.kernelParams = args1; CK(cudaGraphKernelNodeSetParams(k1, &kp));
  cudaGraphExecUpdateResultInfo info; CK(cudaGraphExecUpdate(ge2, g2, &info));
  CK(cudaGraphLaunch(ge2, s2)); CK(cudaStreamSynchronize(s2));
  for (int i = 0; i < n; i++) EXPECT(h[i] == 30.0f);
  cudaGraph_t g3; cudaGraphExec_t ge3; size_t n3 = 0;
  CK(cudaGraphClone(&g3, g2)); CK(cudaGraphGetNodes(g3, NULL, &n3)); EXPECT(n3 == 4);
  cudaGraphNode_t k2c; CK(cudaGraphNodeFindInClone(&k2c, k2, g3));
  float v4 = 1.0f; void *args4[] = {&a, &v4, &nv}; kp.func = (void*)mul; kp.kernelParams = args4;
  CK(cudaGraphKernelNodeSetParams(k2c, &kp));
  CK(cudaGraphInstantiate(&ge3, g3, 0)); CK(cudaGraphLaunch(ge3, s2)); CK(cudaStreamSynchronize(s2));
  for (int i = 0; i < n; i++) EXPECT(h[i] == 3.0f);
  CK(cudaGraphExecDestroy(ge)); CK(cudaGraphExecDestroy(ge2)); CK(cudaGraphExecDestroy(ge3));
  CK(cudaGraphDestroy(g)); CK(cudaGraphDestroy(g2)); CK(cudaGraphDestroy(g3));
  // a child graph and event nodes; an executable graph launched into a capture
  {
    CK(cudaMemset(a, 0, sz));
    cudaGraph_t child, parent, cap;
    cudaGraphExec_t gp, gc;
    CK(cudaGraphCreate(&child, 0)); CK(cudaGraphCreate(&parent, 0));
    float one = 1.0f; void *argsc[] = {&a, &one, &nv};
    kp.func = (void*)add; kp.kernelParams = argsc;
    cudaGraphNode_t c1, c2, cn, er, ew;
    CK(cudaGraphAddKernelNode(&c1, child, NULL, 0, &kp));
    CK(cudaGraphAddKernelNode(&c2, child, &c1, 1, &kp));
    CK(cudaGraphAddChildGraphNode(&cn, parent, NULL, 0, child));
    CK(cudaGraphAddEventRecordNode(&er, parent, &cn, 1, join));
    CK(cudaGraphAddEventWaitNode(&ew, parent, &er, 1, join));
    CK(cudaGraphInstantiate(&gp, parent, 0));
    CK(cudaGraphLaunch(gp, s1)); CK(cudaEventSynchronize(join));
    CK(cudaMemcpy(h, a, sz, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) EXPECT(h[i] == 2.0f);
    CK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeThreadLocal));
    CK(cudaGraphLaunch(gp, s1));
    add<<<4,256,0,s1>>>(a, 10.0f, n);
    CK(cudaStreamEndCapture(s1, &cap));
    cudaGraphNode_t first[2]; size_t nf = 2; cudaGraphNodeType t;
    CK(cudaGraphGetNodes(cap, first, &nf)); CK(cudaGraphNodeGetType(first[0], &t));
    EXPECT(nf == 2 && t == cudaGraphNodeTypeGraph);
    CK(cudaGraphInstantiate(&gc, cap, 0)); CK(cudaGraphLaunch(gc, s1)); CK(cudaStreamSynchronize(s1));
    CK(cudaMemcpy(h, a, sz, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) EXPECT(h[i] == 14.0f);
    CK(cudaGraphExecDestroy(gp)); CK(cudaGraphExecDestroy(gc));
    CK(cudaGraphDestroy(child)); CK(cudaGraphDestroy(parent)); CK(cudaGraphDestroy(cap));
  }
  // memory nodes: cudaMallocAsync/cudaFreeAsync inside a capture, launched twice
  cudaGraph_t g4; cudaGraphExec_t ge4; float *tmp = NULL;
  CK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal));
  CK(cudaMallocAsync(&tmp, sz, s1));
  CK(cudaMemsetAsync(tmp, 0, sz, s1));
  add<<<4,256,0,s1>>>(tmp, 7.0f, n);
  CK(cudaMemcpyAsync(h, tmp, sz, cudaMemcpyDeviceToHost, s1));
  CK(cudaFreeAsync(tmp, s1));
  CK(cudaStreamEndCapture(s1, &g4));
  EXPECT(tmp != NULL);
  CK(cudaGraphInstantiate(&ge4, g4, 0));
  for (int it = 0; it < 2; it++) {
    memset(h, 0, sz);
    CK(cudaGraphLaunch(ge4, s1)); CK(cudaStreamSynchronize(s1));
    for (int i = 0; i < n; i++) EXPECT(h[i] == 7.0f);
  }
  CK(cudaGraphExecDestroy(ge4)); CK(cudaGraphDestroy(g4));
  printf("PASSED\n");
  return 0;
}
