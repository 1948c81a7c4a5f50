/* Vulkan from several threads at once. Part 1: a thread waits on a fence before the main thread
 * has submitted the work that signals it; the wait must end promptly after the submit (the
 * waiter must not hold the shared connection while the submit waits for it). Part 2: THREADS
 * threads, each with its own pool, command buffer, fence and host-visible buffer, fill their
 * buffer with vkCmdFillBuffer ROUNDS times and check it (queue access under a mutex, as Vulkan
 * requires). Prints PASSED when both hold. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vulkan/vulkan.h>

#define THREADS 4
#define ROUNDS 10
#define WORDS 4096
#define CHECK(call)                                                                    \
    do {                                                                               \
        VkResult r_ = (call);                                                          \
        if (r_ != VK_SUCCESS) {                                                        \
            fprintf(stderr, "vk_threads: %s failed: VkResult %d\n", #call, (int)r_);  \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static VkPhysicalDevice pd;
static VkDevice device;
static VkQueue queue;
static pthread_mutex_t queue_mu = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct {
    VkCommandPool pool;
    VkCommandBuffer cb;
    VkFence fence;
    VkBuffer buf;
    VkDeviceMemory mem;
    uint32_t *ptr;
} worker;

static void make_worker(worker *w)
{
    VkCommandPoolCreateInfo cpci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                    .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT};
    CHECK(vkCreateCommandPool(device, &cpci, NULL, &w->pool));
    VkCommandBufferAllocateInfo cbai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                        .commandPool = w->pool, .commandBufferCount = 1};
    CHECK(vkAllocateCommandBuffers(device, &cbai, &w->cb));
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    CHECK(vkCreateFence(device, &fci, NULL, &w->fence));
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                              .size = WORDS * 4, .usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT};
    CHECK(vkCreateBuffer(device, &bci, NULL, &w->buf));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device, w->buf, &req);
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    uint32_t want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = 0;
    while (type < mp.memoryTypeCount &&
           !((req.memoryTypeBits & (1u << type)) &&
             (mp.memoryTypes[type].propertyFlags & want) == want))
        type++;
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                .allocationSize = req.size, .memoryTypeIndex = type};
    CHECK(vkAllocateMemory(device, &mai, NULL, &w->mem));
    CHECK(vkBindBufferMemory(device, w->buf, w->mem, 0));
    CHECK(vkMapMemory(device, w->mem, 0, VK_WHOLE_SIZE, 0, (void **)&w->ptr));
}

static void record_fill(worker *w, uint32_t value)
{
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    CHECK(vkBeginCommandBuffer(w->cb, &bi));
    vkCmdFillBuffer(w->cb, w->buf, 0, VK_WHOLE_SIZE, value);
    CHECK(vkEndCommandBuffer(w->cb));
}

static void submit(worker *w)
{
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                       .pCommandBuffers = &w->cb};
    pthread_mutex_lock(&queue_mu);
    CHECK(vkQueueSubmit(queue, 1, &si, w->fence));
    pthread_mutex_unlock(&queue_mu);
}

static double waited_at;
static worker workers[THREADS];

static void *early_waiter(void *arg)
{
    worker *w = arg;
    CHECK(vkWaitForFences(device, 1, &w->fence, VK_TRUE, 30ull * 1000 * 1000 * 1000));
    waited_at = now_s();
    return NULL;
}

static void *filler(void *arg)
{
    worker *w = arg;
    uint32_t id = (uint32_t)(w - workers);
    for (uint32_t round = 0; round < ROUNDS; round++) {
        uint32_t value = (uint32_t)(id * 1000 + round + 1);
        record_fill(w, value);
        submit(w);
        CHECK(vkWaitForFences(device, 1, &w->fence, VK_TRUE, 30ull * 1000 * 1000 * 1000));
        CHECK(vkResetFences(device, 1, &w->fence));
        for (uint32_t i = 0; i < WORDS; i++)
            if (w->ptr[i] != value) {
                fprintf(stderr, "vk_threads: word %u is %u, expected %u\n", i, w->ptr[i], value);
                exit(1);
            }
    }
    return NULL;
}

int main(void)
{
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pApplicationInfo = &app};
    VkInstance instance;
    CHECK(vkCreateInstance(&ici, NULL, &instance));
    uint32_t n = 1;
    VkResult er = vkEnumeratePhysicalDevices(instance, &n, &pd);
    if ((er != VK_SUCCESS && er != VK_INCOMPLETE) || !n)
        return 1;
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueCount = 1, .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
    CHECK(vkCreateDevice(pd, &dci, NULL, &device));
    vkGetDeviceQueue(device, 0, 0, &queue);

    /* part 1 */
    worker early;
    make_worker(&early);
    record_fill(&early, 0xabcd);
    pthread_t waiter;
    pthread_create(&waiter, NULL, early_waiter, &early);
    usleep(300 * 1000);
    double submitted_at = now_s();
    submit(&early);
    pthread_join(waiter, NULL);
    double lag = waited_at - submitted_at;
    printf("early wait ended %.3f s after the submit\n", lag);
    if (lag > 2.0 || early.ptr[0] != 0xabcd) {
        fprintf(stderr, "vk_threads: the early wait ended %.3f s after the submit (word %x)\n",
                lag, early.ptr[0]);
        return 1;
    }

    /* part 2 */
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        make_worker(&workers[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, filler, &workers[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);

    CHECK(vkDeviceWaitIdle(device));
    vkDestroyDevice(device, NULL);
    vkDestroyInstance(instance, NULL);
    printf("PASSED vk_threads\n");
    return 0;
}
