/* Compute the way real programs write it, for tests/icd/test_icd_compat.py: every line it prints
 * must be the same through rgpu as on the server's driver run directly.
 *
 * Usage: vk_compat_compute COMPAT.spv RING.spv
 *
 * - a pipeline with specialization constants (local size included), push constants holding a
 *   buffer device address, two descriptor sets (storage buffer + uniform texel buffer, pushed
 *   with a push-descriptor template; storage image + uniform buffer, by an update template),
 *   built through a pipeline cache that is saved (vkGetPipelineCacheData, VK_INCOMPLETE
 *   included), reloaded and merged; a cache created from 9 MiB of another driver's data;
 * - vkCmdFillBuffer / vkCmdUpdateBuffer, synchronization2 events (vkCmdSetEvent2 /
 *   vkCmdWaitEvents2) and a host-set event, a secondary command buffer re-recorded and run
 *   with vkCmdExecuteCommands, vkCmdDispatchIndirect, timestamps read with and without
 *   VK_QUERY_RESULT_WAIT_BIT, an imageStore read back with vkCmdCopyImageToBuffer;
 * - a timeline semaphore signalled from the host and by vkQueueSubmit / vkQueueSubmit2, polled
 *   with vkGetSemaphoreCounterValue before the results are read (no fence, no wait);
 * - a command pool reset and re-recording, vkGetFenceStatus polling;
 * - a persistently mapped ring: the host writes frame N+1's input while frame N's output is
 *   written by the device into the same memory (same 64 KiB), then waits and reads it;
 * - a command buffer of over 10 MiB and 9.6 MB of query results (more than a wire frame's
 *   body each way);
 * - hundreds of buffers and samplers created and destroyed. */
#include <time.h>

#include "compat_common.h"

#define N 4096
#define RING_SLOT 256
#define RING_FRAMES 12

typedef struct {
    float add;
    uint32_t n;
    uint64_t addr;
} Push;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static VkPipelineLayout one_set_layout(VkDescriptorType type, uint32_t push_bytes,
                                       VkDescriptorSetLayout *dsl)
{
    VkDescriptorSetLayoutBinding b = {0, type, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL};
    VkDescriptorSetLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, .bindingCount = 1,
        .pBindings = &b};
    CHECK(vkCreateDescriptorSetLayout(dev, &lci, NULL, dsl));
    VkPushConstantRange pcr = {VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
    VkPipelineLayoutCreateInfo plci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                       .setLayoutCount = 1, .pSetLayouts = dsl,
                                       .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr};
    VkPipelineLayout pl;
    CHECK(vkCreatePipelineLayout(dev, &plci, NULL, &pl));
    return pl;
}

/* Frames in flight over one persistently mapped buffer: inputs and outputs share its first
 * 64 KiB, and a second copy of each output lands in the next 64 KiB. */
static void ring(const char *spv)
{
    Buf ring = make_buffer(128 * 1024, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                           VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                           VK_BUFFER_USAGE_TRANSFER_DST_BIT, 1);
    uint32_t *d = ring.map;
    VkDescriptorSetLayout dsl;
    VkPipelineLayout pl = one_set_layout(VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 12, &dsl);
    VkShaderModule sm = load_shader(spv);
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = sm, .pName = "main"},
        .layout = pl};
    VkPipeline pipe;
    CHECK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &cpci, NULL, &pipe));
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1};
    VkDescriptorPoolCreateInfo dpci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                       .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &ps};
    VkDescriptorPool dp;
    CHECK(vkCreateDescriptorPool(dev, &dpci, NULL, &dp));
    VkDescriptorSetAllocateInfo dsai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                        .descriptorPool = dp, .descriptorSetCount = 1,
                                        .pSetLayouts = &dsl};
    VkDescriptorSet set;
    CHECK(vkAllocateDescriptorSets(dev, &dsai, &set));
    VkDescriptorBufferInfo dbi = {ring.buf, 0, VK_WHOLE_SIZE};
    VkWriteDescriptorSet w = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set,
                              .descriptorCount = 1,
                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                              .pBufferInfo = &dbi};
    vkUpdateDescriptorSets(dev, 1, &w, 0, NULL);
    VkCommandBuffer cb[2];
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 2};
    CHECK(vkAllocateCommandBuffers(dev, &cai, cb));
    VkFence fence[2];
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO,
                             .flags = VK_FENCE_CREATE_SIGNALED_BIT};
    for (int i = 0; i < 2; i++)
        CHECK(vkCreateFence(dev, &fci, NULL, &fence[i]));
    int bad = 0;
    uint64_t h = 0;
    for (int f = 0; f <= RING_FRAMES; f++) {
        int s = f & 1, ps = s ^ 1;
        if (f < RING_FRAMES) { /* this frame's input, while the previous frame may run */
            CHECK(vkWaitForFences(dev, 1, &fence[s], VK_TRUE, UINT64_MAX));
            for (int i = 0; i < RING_SLOT; i++)
                d[s * RING_SLOT + i] = (uint32_t)(f * 1000 + i);
        }
        if (f >= 1) { /* then the previous frame's output, beside that input */
            CHECK(vkWaitForFences(dev, 1, &fence[ps], VK_TRUE, UINT64_MAX));
            uint32_t pf = (uint32_t)f - 1;
            const uint32_t *out = d + 16384 + ps * RING_SLOT;
            const uint32_t *near = d + 4 * RING_SLOT + ps * RING_SLOT;
            for (uint32_t i = 0; i < RING_SLOT; i++) {
                uint32_t want = (pf * 1000 + i) * 2u + pf;
                bad += out[i] != want;
                bad += near[i] != want;
            }
            h ^= fnv1a64(out, RING_SLOT * 4) + fnv1a64(near, RING_SLOT * 4);
        }
        if (f == RING_FRAMES)
            break;
        CHECK(vkResetFences(dev, 1, &fence[s]));
        CHECK(vkResetCommandBuffer(cb[s], 0));
        VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                       .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
        CHECK(vkBeginCommandBuffer(cb[s], &bi));
        vkCmdBindPipeline(cb[s], VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
        vkCmdBindDescriptorSets(cb[s], VK_PIPELINE_BIND_POINT_COMPUTE, pl, 0, 1, &set, 0, NULL);
        uint32_t pc[3] = {(uint32_t)(s * RING_SLOT), (uint32_t)(16384 + s * RING_SLOT),
                          (uint32_t)f};
        vkCmdPushConstants(cb[s], pl, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pc, pc);
        vkCmdDispatch(cb[s], RING_SLOT / 64, 1, 1);
        VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                              .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                              .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT};
        vkCmdPipelineBarrier(cb[s], VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                             VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
        VkBufferCopy bc = {(VkDeviceSize)(16384 + s * RING_SLOT) * 4,
                           (VkDeviceSize)(4 * RING_SLOT + s * RING_SLOT) * 4, RING_SLOT * 4};
        vkCmdCopyBuffer(cb[s], ring.buf, ring.buf, 1, &bc);
        host_read_barrier(cb[s], VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT,
                          VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT);
        CHECK(vkEndCommandBuffer(cb[s]));
        VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                           .pCommandBuffers = &cb[s]};
        CHECK(vkQueueSubmit(queue, 1, &si, fence[s]));
    }
    printf("ring frames %d wrong %d hash %016llx\n", RING_FRAMES, bad, (unsigned long long)h);
    CHECK(vkQueueWaitIdle(queue));
    for (int i = 0; i < 2; i++)
        vkDestroyFence(dev, fence[i], NULL);
    vkFreeCommandBuffers(dev, pool, 2, cb);
    vkDestroyDescriptorPool(dev, dp, NULL);
    vkDestroyPipeline(dev, pipe, NULL);
    vkDestroyPipelineLayout(dev, pl, NULL);
    vkDestroyDescriptorSetLayout(dev, dsl, NULL);
    vkDestroyShaderModule(dev, sm, NULL);
    free_buffer(&ring);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: vk_compat_compute COMPAT.spv RING.spv\n");
        return 2;
    }
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .bufferDeviceAddress = 1, .timelineSemaphore = 1};
    VkPhysicalDeviceVulkan13Features f13 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES, .pNext = &f12,
        .synchronization2 = 1};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f13, .features = {.shaderInt64 = 1}};
    const char *exts[] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
    init_device("vk_compat_compute", &f2, exts, 1);
    PFN_vkCmdPushDescriptorSetWithTemplateKHR push_with_template =
        (PFN_vkCmdPushDescriptorSetWithTemplateKHR)vkGetDeviceProcAddr(
            dev, "vkCmdPushDescriptorSetWithTemplateKHR");
    if (!push_with_template) {
        fprintf(stderr, "no vkCmdPushDescriptorSetWithTemplateKHR\n");
        return 1;
    }

    Buf out = make_buffer(N * 4, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                     VK_BUFFER_USAGE_TRANSFER_DST_BIT, 1);
    Buf texel = make_buffer(64 * 4, VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT, 1);
    for (int i = 0; i < 64; i++)
        ((float *)texel.map)[i] = (float)i * 0.5f;
    Buf ubo = make_buffer(256, VK_BUFFER_USAGE_UNIFORM_BUFFER_BIT |
                                   VK_BUFFER_USAGE_TRANSFER_DST_BIT, 0);
    Buf bda = make_buffer(N * 4, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                     VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT, 1);
    Buf indirect = make_buffer(64, VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT, 1);
    Buf pixels = make_buffer(32 * 32 * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, 1);
    Img img = make_image(VK_FORMAT_R8G8B8A8_UNORM, 32, 32, 1, VK_SAMPLE_COUNT_1_BIT,
                         VK_IMAGE_USAGE_STORAGE_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT,
                         VK_IMAGE_ASPECT_COLOR_BIT);
    VkBufferDeviceAddressInfo bai = {.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO,
                                     .buffer = bda.buf};
    VkDeviceAddress addr = vkGetBufferDeviceAddress(dev, &bai);
    VkBufferViewCreateInfo bvci = {.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
                                   .buffer = texel.buf, .format = VK_FORMAT_R32_SFLOAT,
                                   .range = VK_WHOLE_SIZE};
    VkBufferView texel_view;
    CHECK(vkCreateBufferView(dev, &bvci, NULL, &texel_view));

    /* set 0 is pushed, set 1 allocated */
    VkDescriptorSetLayoutBinding b0[] = {
        {0, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL},
        {1, VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL}};
    VkDescriptorSetLayoutBinding b1[] = {
        {0, VK_DESCRIPTOR_TYPE_STORAGE_IMAGE, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL},
        {1, VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL}};
    VkDescriptorSetLayoutCreateInfo l0 = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR, .bindingCount = 2,
        .pBindings = b0};
    VkDescriptorSetLayoutCreateInfo l1 = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, .bindingCount = 2,
        .pBindings = b1};
    VkDescriptorSetLayout dsl[2];
    CHECK(vkCreateDescriptorSetLayout(dev, &l0, NULL, &dsl[0]));
    CHECK(vkCreateDescriptorSetLayout(dev, &l1, NULL, &dsl[1]));
    VkPushConstantRange pcr = {VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(Push)};
    VkPipelineLayoutCreateInfo plci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                       .setLayoutCount = 2, .pSetLayouts = dsl,
                                       .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr};
    VkPipelineLayout pl;
    CHECK(vkCreatePipelineLayout(dev, &plci, NULL, &pl));

    /* the pipeline, through a cache saved and reloaded */
    VkShaderModule sm = load_shader(argv[1]);
    struct {
        int32_t lx;
        float mul;
        VkBool32 texel;
    } spec = {64, 2.0f, VK_TRUE};
    VkSpecializationMapEntry me[] = {{0, 0, 4}, {1, 4, 4}, {2, 8, 4}};
    VkSpecializationInfo si = {3, me, sizeof spec, &spec};
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = sm, .pName = "main",
                  .pSpecializationInfo = &si},
        .layout = pl};
    VkPipelineCacheCreateInfo pcci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    VkPipelineCache cache, reloaded;
    CHECK(vkCreatePipelineCache(dev, &pcci, NULL, &cache));
    VkPipeline first, pipe;
    CHECK(vkCreateComputePipelines(dev, cache, 1, &cpci, NULL, &first));
    size_t csize = 0, small = 8;
    CHECK(vkGetPipelineCacheData(dev, cache, &csize, NULL));
    void *cdata = malloc(csize);
    VkResult short_read = vkGetPipelineCacheData(dev, cache, &small, cdata);
    printf("pipeline cache: data %s, 8-byte buffer -> VkResult %d, %zu bytes\n",
           csize > 0 ? "saved" : "missing", (int)short_read, small);
    CHECK(vkGetPipelineCacheData(dev, cache, &csize, cdata));
    pcci.initialDataSize = csize;
    pcci.pInitialData = cdata;
    CHECK(vkCreatePipelineCache(dev, &pcci, NULL, &reloaded));
    CHECK(vkCreateComputePipelines(dev, reloaded, 1, &cpci, NULL, &pipe));
    CHECK(vkMergePipelineCaches(dev, reloaded, 1, &cache));
    /* a 9 MiB cache saved by another driver: drivers ignore data they do not recognise */
    size_t stale_size = 9u << 20;
    uint8_t *stale = malloc(stale_size);
    for (size_t i = 0; i < stale_size; i++)
        stale[i] = (uint8_t)(i * 7 + (i >> 12));
    VkPipelineCacheCreateInfo stale_info = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                            .initialDataSize = stale_size, .pInitialData = stale};
    VkPipelineCache stale_cache;
    printf("pipeline cache from 9 MiB of foreign data: VkResult %d\n",
           (int)vkCreatePipelineCache(dev, &stale_info, NULL, &stale_cache));
    vkDestroyPipelineCache(dev, stale_cache, NULL);
    free(stale);
    vkDestroyPipeline(dev, first, NULL);
    vkDestroyPipelineCache(dev, cache, NULL);
    vkDestroyPipelineCache(dev, reloaded, NULL);
    free(cdata);

    /* descriptors: set 1 by an update template, set 0 by a push-descriptor template */
    VkDescriptorPoolSize ps[] = {{VK_DESCRIPTOR_TYPE_STORAGE_IMAGE, 1},
                                 {VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, 1}};
    VkDescriptorPoolCreateInfo dpci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .flags = VK_DESCRIPTOR_POOL_CREATE_FREE_DESCRIPTOR_SET_BIT, .maxSets = 1,
        .poolSizeCount = 2, .pPoolSizes = ps};
    VkDescriptorPool dp;
    CHECK(vkCreateDescriptorPool(dev, &dpci, NULL, &dp));
    VkDescriptorSetAllocateInfo dsai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                        .descriptorPool = dp, .descriptorSetCount = 1,
                                        .pSetLayouts = &dsl[1]};
    VkDescriptorSet set1;
    CHECK(vkAllocateDescriptorSets(dev, &dsai, &set1));
    struct {
        VkDescriptorImageInfo image;
        VkDescriptorBufferInfo uniform;
    } set1_data = {{VK_NULL_HANDLE, img.view, VK_IMAGE_LAYOUT_GENERAL}, {ubo.buf, 0, VK_WHOLE_SIZE}};
    VkDescriptorUpdateTemplateEntry te1[] = {
        {0, 0, 1, VK_DESCRIPTOR_TYPE_STORAGE_IMAGE, 0, 0},
        {1, 0, 1, VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, sizeof(VkDescriptorImageInfo), 0}};
    VkDescriptorUpdateTemplateCreateInfo tci1 = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_UPDATE_TEMPLATE_CREATE_INFO,
        .descriptorUpdateEntryCount = 2, .pDescriptorUpdateEntries = te1,
        .templateType = VK_DESCRIPTOR_UPDATE_TEMPLATE_TYPE_DESCRIPTOR_SET,
        .descriptorSetLayout = dsl[1]};
    VkDescriptorUpdateTemplate t1, t0;
    CHECK(vkCreateDescriptorUpdateTemplate(dev, &tci1, NULL, &t1));
    vkUpdateDescriptorSetWithTemplate(dev, set1, t1, &set1_data);
    struct {
        VkDescriptorBufferInfo storage;
        VkBufferView texel;
    } set0_data = {{out.buf, 0, VK_WHOLE_SIZE}, texel_view};
    VkDescriptorUpdateTemplateEntry te0[] = {
        {0, 0, 1, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 0, 0},
        {1, 0, 1, VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, sizeof(VkDescriptorBufferInfo), 0}};
    VkDescriptorUpdateTemplateCreateInfo tci0 = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_UPDATE_TEMPLATE_CREATE_INFO,
        .descriptorUpdateEntryCount = 2, .pDescriptorUpdateEntries = te0,
        .templateType = VK_DESCRIPTOR_UPDATE_TEMPLATE_TYPE_PUSH_DESCRIPTORS_KHR,
        .pipelineBindPoint = VK_PIPELINE_BIND_POINT_COMPUTE, .pipelineLayout = pl, .set = 0};
    CHECK(vkCreateDescriptorUpdateTemplate(dev, &tci0, NULL, &t0));

    VkQueryPoolCreateInfo qpci = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                  .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = 4};
    VkQueryPool qp;
    CHECK(vkCreateQueryPool(dev, &qpci, NULL, &qp));
    VkEventCreateInfo eci = {.sType = VK_STRUCTURE_TYPE_EVENT_CREATE_INFO};
    VkEvent ev, host_ev;
    CHECK(vkCreateEvent(dev, &eci, NULL, &ev));
    CHECK(vkCreateEvent(dev, &eci, NULL, &host_ev));
    uint32_t groups[3] = {N / 64, 1, 1};
    memcpy(indirect.map, groups, sizeof groups);

    /* the dispatch lives in a secondary command buffer, recorded twice (the second wins) */
    VkCommandBuffer sec;
    VkCommandBufferAllocateInfo sai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_SECONDARY,
                                       .commandBufferCount = 1};
    CHECK(vkAllocateCommandBuffers(dev, &sai, &sec));
    VkCommandBufferInheritanceInfo inh = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_INHERITANCE_INFO};
    VkCommandBufferBeginInfo sbi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                    .pInheritanceInfo = &inh};
    Push push = {0, N, addr};
    for (int round = 0; round < 2; round++) {
        CHECK(vkBeginCommandBuffer(sec, &sbi));
        vkCmdBindPipeline(sec, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
        push_with_template(sec, t0, pl, 0, &set0_data);
        vkCmdBindDescriptorSets(sec, VK_PIPELINE_BIND_POINT_COMPUTE, pl, 1, 1, &set1, 0, NULL);
        push.add = 0.25f + (float)round;
        vkCmdPushConstants(sec, pl, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof push, &push);
        vkCmdDispatchIndirect(sec, indirect.buf, 0);
        CHECK(vkEndCommandBuffer(sec));
    }
    VkCommandBuffer cbs[2];
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 2};
    CHECK(vkAllocateCommandBuffers(dev, &cai, cbs));
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    /* cbs[0]: fill and update, then set an event */
    CHECK(vkBeginCommandBuffer(cbs[0], &bi));
    vkCmdResetQueryPool(cbs[0], qp, 0, 4);
    vkCmdFillBuffer(cbs[0], out.buf, 0, VK_WHOLE_SIZE, 0x7f7f7f7f);
    struct {
        float k[4];
        uint32_t words[4];
    } uniforms = {{3.0f, 0.5f, 0, 0}, {1, 2, 3, 4}};
    vkCmdUpdateBuffer(cbs[0], ubo.buf, 0, sizeof uniforms, &uniforms);
    VkMemoryBarrier2 mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER_2,
                           .srcStageMask = VK_PIPELINE_STAGE_2_TRANSFER_BIT,
                           .srcAccessMask = VK_ACCESS_2_TRANSFER_WRITE_BIT,
                           .dstStageMask = VK_PIPELINE_STAGE_2_COMPUTE_SHADER_BIT,
                           .dstAccessMask = VK_ACCESS_2_SHADER_READ_BIT |
                                            VK_ACCESS_2_SHADER_WRITE_BIT |
                                            VK_ACCESS_2_UNIFORM_READ_BIT};
    VkDependencyInfo di = {.sType = VK_STRUCTURE_TYPE_DEPENDENCY_INFO, .memoryBarrierCount = 1,
                           .pMemoryBarriers = &mb};
    vkCmdSetEvent2(cbs[0], ev, &di);
    CHECK(vkEndCommandBuffer(cbs[0]));
    /* cbs[1]: wait for both events, run the secondary between timestamps, copy the image */
    CHECK(vkBeginCommandBuffer(cbs[1], &bi));
    vkCmdWaitEvents2(cbs[1], 1, &ev, &di);
    vkCmdWaitEvents(cbs[1], 1, &host_ev, VK_PIPELINE_STAGE_HOST_BIT,
                    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, NULL, 0, NULL, 0, NULL);
    image_barrier(cbs[1], img.img, VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, VK_IMAGE_LAYOUT_UNDEFINED,
                  VK_IMAGE_LAYOUT_GENERAL, 0, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT);
    vkCmdWriteTimestamp2(cbs[1], VK_PIPELINE_STAGE_2_TOP_OF_PIPE_BIT, qp, 0);
    vkCmdExecuteCommands(cbs[1], 1, &sec);
    vkCmdWriteTimestamp(cbs[1], VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, qp, 1);
    image_barrier(cbs[1], img.img, VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, VK_IMAGE_LAYOUT_GENERAL,
                  VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, VK_ACCESS_SHADER_WRITE_BIT,
                  VK_ACCESS_TRANSFER_READ_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                  VK_PIPELINE_STAGE_TRANSFER_BIT);
    VkBufferImageCopy bic = {.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1},
                             .imageExtent = {32, 32, 1}};
    vkCmdCopyImageToBuffer(cbs[1], img.img, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, pixels.buf, 1,
                           &bic);
    host_read_barrier(cbs[1], VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT);
    CHECK(vkEndCommandBuffer(cbs[1]));

    /* a timeline: host signals 1 -> cbs[0] signals 2 -> cbs[1] (vkQueueSubmit2) signals 3 */
    VkSemaphoreTypeCreateInfo stci = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
                                      .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE};
    VkSemaphoreCreateInfo sci = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, .pNext = &stci};
    VkSemaphore timeline;
    CHECK(vkCreateSemaphore(dev, &sci, NULL, &timeline));
    uint64_t wait1 = 1, signal2 = 2;
    VkTimelineSemaphoreSubmitInfo tssi = {
        .sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO, .waitSemaphoreValueCount = 1,
        .pWaitSemaphoreValues = &wait1, .signalSemaphoreValueCount = 1,
        .pSignalSemaphoreValues = &signal2};
    VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT;
    VkSubmitInfo sub = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .pNext = &tssi,
                        .waitSemaphoreCount = 1, .pWaitSemaphores = &timeline,
                        .pWaitDstStageMask = &wait_stage, .commandBufferCount = 1,
                        .pCommandBuffers = &cbs[0], .signalSemaphoreCount = 1,
                        .pSignalSemaphores = &timeline};
    CHECK(vkQueueSubmit(queue, 1, &sub, VK_NULL_HANDLE));
    VkSemaphoreSubmitInfo wait_info = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_SUBMIT_INFO,
                                       .semaphore = timeline, .value = 2,
                                       .stageMask = VK_PIPELINE_STAGE_2_ALL_COMMANDS_BIT};
    VkSemaphoreSubmitInfo signal_info = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_SUBMIT_INFO,
                                         .semaphore = timeline, .value = 3,
                                         .stageMask = VK_PIPELINE_STAGE_2_ALL_COMMANDS_BIT};
    VkCommandBufferSubmitInfo cbsi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_SUBMIT_INFO,
                                      .commandBuffer = cbs[1]};
    VkSubmitInfo2 sub2 = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO_2, .waitSemaphoreInfoCount = 1,
                          .pWaitSemaphoreInfos = &wait_info, .commandBufferInfoCount = 1,
                          .pCommandBufferInfos = &cbsi, .signalSemaphoreInfoCount = 1,
                          .pSignalSemaphoreInfos = &signal_info};
    CHECK(vkQueueSubmit2(queue, 1, &sub2, VK_NULL_HANDLE));
    uint64_t value = 99;
    CHECK(vkGetSemaphoreCounterValue(dev, timeline, &value));
    printf("timeline before the host signal: %llu; host event %s\n", (unsigned long long)value,
           vkGetEventStatus(dev, host_ev) == VK_EVENT_RESET ? "reset" : "set?");
    VkSemaphoreSignalInfo sgi = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO,
                                 .semaphore = timeline, .value = 1};
    CHECK(vkSignalSemaphore(dev, &sgi));
    CHECK(vkSetEvent(dev, host_ev));
    printf("host event after vkSetEvent: %s\n",
           vkGetEventStatus(dev, host_ev) == VK_EVENT_SET ? "set" : "reset?");
    /* poll, then read: the host learns of completion from the counter alone */
    double deadline = now_s() + 60;
    do
        CHECK(vkGetSemaphoreCounterValue(dev, timeline, &value));
    while (value < 3 && now_s() < deadline);
    printf("timeline polled to %llu\n", (unsigned long long)value);
    const float *o = out.map;
    const uint32_t *via_address = bda.map;
    printf("storage buffer %016llx out[5]=%g out[4095]=%g\n",
           (unsigned long long)fnv1a64(out.map, N * 4), o[5], o[4095]);
    printf("storage image %016llx, buffer device address %016llx [10]=%u\n",
           (unsigned long long)fnv1a64(pixels.map, 32 * 32 * 4),
           (unsigned long long)fnv1a64(bda.map, N * 4), via_address[10]);
    uint64_t ts[4] = {0};
    VkResult qr = vkGetQueryPoolResults(dev, qp, 0, 2, sizeof ts, ts, 16,
                                        VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    printf("timestamps: VkResult %d, ordered %d\n", (int)qr, ts[2] >= ts[0] && ts[0] != 0);
    uint64_t tsa[4] = {0};
    qr = vkGetQueryPoolResults(dev, qp, 0, 2, sizeof tsa, tsa, 16,
                               VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
    printf("timestamps with availability: VkResult %d, available %llu %llu, same %d\n", (int)qr,
           (unsigned long long)tsa[1], (unsigned long long)tsa[3], tsa[0] == ts[0]);
    uint32_t t32[2] = {0};
    qr = vkGetQueryPoolResults(dev, qp, 2, 1, sizeof t32, t32, 8, 0);
    printf("query never written: VkResult %d\n", (int)qr);

    /* the pool reset, cbs[0] re-recorded; the fence polled */
    CHECK(vkResetCommandPool(dev, pool, 0));
    CHECK(vkBeginCommandBuffer(cbs[0], &bi));
    vkCmdFillBuffer(cbs[0], out.buf, 0, 16, 0x3f800000);
    host_read_barrier(cbs[0], VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT);
    CHECK(vkEndCommandBuffer(cbs[0]));
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    CHECK(vkCreateFence(dev, &fci, NULL, &fence));
    VkSubmitInfo plain = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                          .pCommandBuffers = &cbs[0]};
    CHECK(vkQueueSubmit(queue, 1, &plain, fence));
    while (vkGetFenceStatus(dev, fence) == VK_NOT_READY && now_s() < deadline)
        ;
    printf("re-recorded: out[0..4] = %g %g %g %g %g\n", o[0], o[1], o[2], o[3], o[4]);
    CHECK(vkResetFences(dev, 1, &fence));
    printf("fence after vkResetFences: VkResult %d\n", (int)vkGetFenceStatus(dev, fence));

    ring(argv[2]);

    /* a command buffer larger than one wire frame (160 x 64 KiB of vkCmdUpdateBuffer data) */
    Buf big = make_buffer(4 << 16, VK_BUFFER_USAGE_TRANSFER_DST_BIT, 1);
    uint32_t *words = malloc(1 << 16);
    VkCommandBuffer bulky = begin_once();
    for (uint32_t k = 0; k < 160; k++) {
        for (uint32_t i = 0; i < (1 << 14); i++)
            words[i] = k * 2654435761u + i;
        vkCmdUpdateBuffer(bulky, big.buf, (VkDeviceSize)(k % 4) << 16, 1 << 16, words);
    }
    host_read_barrier(bulky, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT);
    submit_once(bulky);
    printf("160 updates of 64 KiB: %016llx\n", (unsigned long long)fnv1a64(big.map, 4 << 16));
    free(words);
    free_buffer(&big);

    /* 600,000 queries read at once: 9.6 MB of results, more than a wire frame's body */
    const uint32_t nq = 600000;
    VkQueryPoolCreateInfo big_qpci = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                      .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = nq};
    VkQueryPool big_qp;
    CHECK(vkCreateQueryPool(dev, &big_qpci, NULL, &big_qp));
    VkCommandBuffer stamps = begin_once();
    vkCmdResetQueryPool(stamps, big_qp, 0, nq);
    for (uint32_t q = 0; q < nq; q += 1000)
        vkCmdWriteTimestamp(stamps, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, big_qp, q);
    submit_once(stamps);
    uint64_t *results = calloc(nq, 16);
    qr = vkGetQueryPoolResults(dev, big_qp, 0, nq, (size_t)nq * 16, results, 16,
                               VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
    uint64_t available = 0;
    for (uint32_t q = 0; q < nq; q++)
        available += results[2 * q + 1];
    printf("%u queries read at once: VkResult %d, %llu available\n", nq, (int)qr,
           (unsigned long long)available);
    free(results);
    vkDestroyQueryPool(dev, big_qp, NULL);

    /* objects made and destroyed in a loop */
    for (int i = 0; i < 200; i++) {
        Buf t = make_buffer(1024, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, i & 1);
        if (t.map)
            memset(t.map, i, 1024);
        free_buffer(&t);
        VkSampler smp;
        VkSamplerCreateInfo smci = {.sType = VK_STRUCTURE_TYPE_SAMPLER_CREATE_INFO};
        CHECK(vkCreateSampler(dev, &smci, NULL, &smp));
        vkDestroySampler(dev, smp, NULL);
    }
    CHECK(vkDeviceWaitIdle(dev));
    vkDestroyFence(dev, fence, NULL);
    vkDestroySemaphore(dev, timeline, NULL);
    vkDestroyEvent(dev, ev, NULL);
    vkDestroyEvent(dev, host_ev, NULL);
    vkDestroyQueryPool(dev, qp, NULL);
    vkDestroyDescriptorUpdateTemplate(dev, t0, NULL);
    vkDestroyDescriptorUpdateTemplate(dev, t1, NULL);
    vkDestroyDescriptorPool(dev, dp, NULL);
    vkDestroyPipeline(dev, pipe, NULL);
    vkDestroyPipelineLayout(dev, pl, NULL);
    vkDestroyDescriptorSetLayout(dev, dsl[0], NULL);
    vkDestroyDescriptorSetLayout(dev, dsl[1], NULL);
    vkDestroyShaderModule(dev, sm, NULL);
    vkDestroyBufferView(dev, texel_view, NULL);
    free_image(&img);
    Buf *bufs[] = {&out, &texel, &ubo, &bda, &indirect, &pixels};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free_buffer(bufs[i]);
    finish();
    printf("PASSED vk_compat_compute\n");
    return 0;
}
