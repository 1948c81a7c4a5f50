/* Vulkan benchmark for benchmarks/vulkan.py: the same binary runs on lavapipe directly and
 * through rgpu's ICD.
 *
 * Usage: vk_bench SHADER.spv RTT_N MAX_MIB
 *
 * Prints one JSON object:
 * - "setup_ms": instance, device, pipeline and buffers created (the first calls of a program);
 * - "dispatch": RTT_N iterations of vkQueueSubmit (one 1x1x1 dispatch of SHADER, which adds 1
 *   to a counter in a host-visible, host-coherent buffer) + vkWaitForFences + vkResetFences,
 *   per-iteration median and p99 in microseconds, and the medians of the three calls; the
 *   counter is checked afterwards;
 * - "upload": for 1, 4, 16, ... MiB up to MAX_MIB, the host fills a mapped host-visible,
 *   host-coherent staging buffer (of that size) with new bytes, submits a vkCmdCopyBuffer into a second
 *   (unmapped) buffer and waits for the fence. Times: fill, until vkQueueSubmit returned,
 *   until the fence wait returned; MB/s over the whole iteration and over fill + submit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vulkan/vulkan.h>

#define CHECK(call)                                                                   \
    do {                                                                              \
        VkResult r_ = (call);                                                         \
        if (r_ != VK_SUCCESS) {                                                       \
            fprintf(stderr, "vk_bench: %s failed: VkResult %d\n", #call, (int)r_);  \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

#define TIMEOUT_NS (60ull * 1000 * 1000 * 1000)

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[(int)(q * (n - 1) + 0.5)];
}

static uint32_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint32_t *buf = malloc((size_t)n);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "vk_bench: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static VkPhysicalDeviceMemoryProperties mem_props;
static VkDevice device;

static uint32_t memory_type(uint32_t bits, uint32_t want)
{
    for (uint32_t t = 0; t < mem_props.memoryTypeCount; t++)
        if ((bits & (1u << t)) && (mem_props.memoryTypes[t].propertyFlags & want) == want)
            return t;
    fprintf(stderr, "vk_bench: no memory type with flags 0x%x\n", want);
    exit(1);
}

static void make_buffer(VkDeviceSize size, VkBufferUsageFlags usage, uint32_t want,
                        VkBuffer *buf, VkDeviceMemory *mem)
{
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                              .usage = usage, .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    CHECK(vkCreateBuffer(device, &bci, NULL, buf));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device, *buf, &req);
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                .allocationSize = req.size,
                                .memoryTypeIndex = memory_type(req.memoryTypeBits, want)};
    CHECK(vkAllocateMemory(device, &mai, NULL, mem));
    CHECK(vkBindBufferMemory(device, *buf, *mem, 0));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: vk_bench SHADER.spv [RTT_N [MAX_MIB]]\n");
        return 2;
    }
    int rtt_n = argc > 2 ? atoi(argv[2]) : 1000;
    size_t max_mib = argc > 3 ? (size_t)atol(argv[3]) : 64;
    const uint32_t host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                          VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    double t_setup = now_us();

    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "vk_bench", .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pApplicationInfo = &app};
    VkInstance instance;
    CHECK(vkCreateInstance(&ici, NULL, &instance));
    uint32_t npd = 1;
    VkPhysicalDevice pd;
    VkResult er = vkEnumeratePhysicalDevices(instance, &npd, &pd);
    if ((er != VK_SUCCESS && er != VK_INCOMPLETE) || !npd) {
        fprintf(stderr, "vk_bench: no Vulkan device\n");
        return 1;
    }
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(pd, &props);
    vkGetPhysicalDeviceMemoryProperties(pd, &mem_props);
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    nq = nq > 16 ? 16 : nq;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    uint32_t family = UINT32_MAX;
    for (uint32_t i = 0; i < nq && family == UINT32_MAX; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            family = i;
    if (family == UINT32_MAX) {
        fprintf(stderr, "vk_bench: no compute queue\n");
        return 1;
    }
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = family, .queueCount = 1,
                                   .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
    CHECK(vkCreateDevice(pd, &dci, NULL, &device));
    VkQueue queue;
    vkGetDeviceQueue(device, family, 0, &queue);

    /* the counter the dispatch increments */
    VkBuffer counter;
    VkDeviceMemory counter_mem;
    make_buffer(256, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, host, &counter, &counter_mem);
    volatile uint32_t *count;
    CHECK(vkMapMemory(device, counter_mem, 0, VK_WHOLE_SIZE, 0, (void **)&count));
    *count = 0;

    size_t code_size;
    uint32_t *code = read_file(argv[1], &code_size);
    VkShaderModuleCreateInfo smci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                     .codeSize = code_size, .pCode = code};
    VkShaderModule module;
    CHECK(vkCreateShaderModule(device, &smci, NULL, &module));
    VkDescriptorSetLayoutBinding binding = {.binding = 0,
                                            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                            .descriptorCount = 1,
                                            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dslci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, .bindingCount = 1,
        .pBindings = &binding};
    VkDescriptorSetLayout dsl;
    CHECK(vkCreateDescriptorSetLayout(device, &dslci, NULL, &dsl));
    VkPipelineLayoutCreateInfo plci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                       .setLayoutCount = 1, .pSetLayouts = &dsl};
    VkPipelineLayout layout;
    CHECK(vkCreatePipelineLayout(device, &plci, NULL, &layout));
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = module, .pName = "main"},
        .layout = layout};
    VkPipeline pipeline;
    CHECK(vkCreateComputePipelines(device, VK_NULL_HANDLE, 1, &cpci, NULL, &pipeline));
    VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = 1};
    VkDescriptorPoolCreateInfo dpci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                       .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &ps};
    VkDescriptorPool dpool;
    CHECK(vkCreateDescriptorPool(device, &dpci, NULL, &dpool));
    VkDescriptorSetAllocateInfo dsai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                        .descriptorPool = dpool, .descriptorSetCount = 1,
                                        .pSetLayouts = &dsl};
    VkDescriptorSet set;
    CHECK(vkAllocateDescriptorSets(device, &dsai, &set));
    VkDescriptorBufferInfo info = {.buffer = counter, .range = VK_WHOLE_SIZE};
    VkWriteDescriptorSet write = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                  .dstSet = set, .dstBinding = 0, .descriptorCount = 1,
                                  .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                  .pBufferInfo = &info};
    vkUpdateDescriptorSets(device, 1, &write, 0, NULL);

    VkCommandPoolCreateInfo cpoolci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                       .queueFamilyIndex = family};
    VkCommandPool cpool;
    CHECK(vkCreateCommandPool(device, &cpoolci, NULL, &cpool));
    VkCommandBuffer cb[2];
    VkCommandBufferAllocateInfo cbai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                        .commandPool = cpool,
                                        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                        .commandBufferCount = 2};
    CHECK(vkAllocateCommandBuffers(device, &cbai, cb));
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    CHECK(vkBeginCommandBuffer(cb[0], &bi));
    vkCmdBindPipeline(cb[0], VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    vkCmdBindDescriptorSets(cb[0], VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, NULL);
    vkCmdDispatch(cb[0], 1, 1, 1);
    CHECK(vkEndCommandBuffer(cb[0]));
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    CHECK(vkCreateFence(device, &fci, NULL, &fence));
    double setup_ms = (now_us() - t_setup) / 1e3;

    /* submit-and-wait round trip */
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                       .pCommandBuffers = &cb[0]};
    int warm = rtt_n < 50 ? rtt_n : 50;
    size_t cnt = (size_t)(rtt_n > 1 ? rtt_n : 1);
    double *t = malloc(sizeof *t * cnt * 4), *ts = t + cnt, *tw = ts + cnt, *tr = tw + cnt;
    if (!t)
        return 1;
    for (int i = 0; i < warm + rtt_n; i++) {
        double t0 = now_us();
        CHECK(vkQueueSubmit(queue, 1, &si, fence));
        double t1 = now_us();
        CHECK(vkWaitForFences(device, 1, &fence, VK_TRUE, TIMEOUT_NS));
        double t2 = now_us();
        CHECK(vkResetFences(device, 1, &fence));
        double t3 = now_us();
        if (i >= warm) {
            t[i - warm] = t3 - t0;
            ts[i - warm] = t1 - t0;
            tw[i - warm] = t2 - t1;
            tr[i - warm] = t3 - t2;
        }
    }
    if (*count != (uint32_t)(warm + rtt_n)) {
        fprintf(stderr, "vk_bench: counter %u after %d dispatches\n", *count, warm + rtt_n);
        return 1;
    }
    printf("{\n  \"device\": \"%s\",\n  \"setup_ms\": %.1f,\n", props.deviceName, setup_ms);
    printf("  \"dispatch\": {\"n\": %d, \"median_us\": %.1f, \"p99_us\": %.1f, "
           "\"submit_us\": %.1f, \"wait_us\": %.1f, \"reset_us\": %.1f},\n", rtt_n,
           pct(t, rtt_n, 0.5), pct(t, rtt_n, 0.99), pct(ts, rtt_n, 0.5), pct(tw, rtt_n, 0.5),
           pct(tr, rtt_n, 0.5));
    fflush(stdout);

    /* uploads through a mapped staging buffer of the size uploaded */
    VkBuffer dst;
    VkDeviceMemory dst_mem;
    make_buffer((VkDeviceSize)max_mib << 20, VK_BUFFER_USAGE_TRANSFER_DST_BIT, 0, &dst, &dst_mem);
    printf("  \"upload\": [");
    uint64_t stamp = 1;
    for (size_t mib = 1; mib <= max_mib; mib *= 4) {
        VkDeviceSize bytes = (VkDeviceSize)mib << 20;
        VkBuffer staging;
        VkDeviceMemory staging_mem;
        make_buffer(bytes, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, host, &staging, &staging_mem);
        uint64_t *map;
        CHECK(vkMapMemory(device, staging_mem, 0, VK_WHOLE_SIZE, 0, (void **)&map));
        CHECK(vkResetCommandBuffer(cb[1], 0));
        CHECK(vkBeginCommandBuffer(cb[1], &bi));
        VkBufferCopy region = {.size = bytes};
        vkCmdCopyBuffer(cb[1], staging, dst, 1, &region);
        CHECK(vkEndCommandBuffer(cb[1]));
        VkSubmitInfo usi = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                            .pCommandBuffers = &cb[1]};
        int reps = mib >= 64 ? 2 : (int)(64 / mib) > 8 ? 8 : (int)(64 / mib);
        double fill[8], submit[8], total[8];
        for (int r = 0; r < reps + 1; r++) { /* the first is a warm-up */
            size_t words = (size_t)(bytes / 8);
            double t0 = now_us();
            stamp++;
            for (size_t i = 0; i < words; i++)
                map[i] = (i * 0x9E3779B97F4A7C15ull) ^ stamp; /* new bytes every time */
            double t1 = now_us();
            CHECK(vkQueueSubmit(queue, 1, &usi, fence));
            double t2 = now_us();
            CHECK(vkWaitForFences(device, 1, &fence, VK_TRUE, TIMEOUT_NS));
            double t3 = now_us();
            CHECK(vkResetFences(device, 1, &fence));
            if (r > 0) {
                fill[r - 1] = t1 - t0;
                submit[r - 1] = t2 - t0;
                total[r - 1] = t3 - t0;
            }
        }
        double f = pct(fill, reps, 0.5), s = pct(submit, reps, 0.5), a = pct(total, reps, 0.5);
        printf("%s\n    {\"mib\": %zu, \"reps\": %d, \"fill_ms\": %.2f, \"submit_ms\": %.2f, "
               "\"total_ms\": %.2f, \"mb_s\": %.1f, \"submit_mb_s\": %.1f}",
               mib == 1 ? "" : ",", mib, reps, f / 1e3, s / 1e3, a / 1e3,
               (double)bytes / a, (double)bytes / s);
        fflush(stdout);
        vkUnmapMemory(device, staging_mem);
        vkDestroyBuffer(device, staging, NULL);
        vkFreeMemory(device, staging_mem, NULL);
    }
    printf("\n  ]\n}\n");

    vkUnmapMemory(device, counter_mem);
    vkDestroyFence(device, fence, NULL);
    vkFreeCommandBuffers(device, cpool, 2, cb);
    vkDestroyCommandPool(device, cpool, NULL);
    vkDestroyDescriptorPool(device, dpool, NULL);
    vkDestroyPipeline(device, pipeline, NULL);
    vkDestroyPipelineLayout(device, layout, NULL);
    vkDestroyDescriptorSetLayout(device, dsl, NULL);
    vkDestroyShaderModule(device, module, NULL);
    VkBuffer bufs[2] = {counter, dst};
    VkDeviceMemory mems[2] = {counter_mem, dst_mem};
    for (int i = 0; i < 2; i++) {
        vkDestroyBuffer(device, bufs[i], NULL);
        vkFreeMemory(device, mems[i], NULL);
    }
    vkDestroyDevice(device, NULL);
    vkDestroyInstance(instance, NULL);
    free(code);
    free(t);
    return 0;
}
