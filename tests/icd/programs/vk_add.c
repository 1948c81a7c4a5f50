/* An unmodified Vulkan compute program: c = a + b over N floats (default 1M) in host-visible,
 * host-coherent buffers the program maps once and never flushes, a compute pipeline with push
 * constants, one submit with a fence. Usage: vk_add SHADER.spv [N [REPEAT [template]]]: with
 * "template" the descriptor set is written with a descriptor update template. VK_ADD_DEVICE=K
 * picks the K-th physical device (default 0). Prints PASSED when
 * every element is right; any failing call prints its name and VkResult and exits 1. With
 * REPEAT it then submits the same command buffer REPEAT more times, printing "iteration K"
 * after each (for the tests that take the server away mid-run). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>

#define CHECK(call)                                                                   \
    do {                                                                              \
        VkResult r_ = (call);                                                         \
        if (r_ != VK_SUCCESS) {                                                       \
            fprintf(stderr, "vk_add: %s failed: VkResult %d\n", #call, (int)r_);    \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

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
        fprintf(stderr, "vk_add: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: vk_add SHADER.spv [N]\n");
        return 2;
    }
    uint32_t n = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 1u << 20;
    unsigned long repeat = argc > 3 ? strtoul(argv[3], NULL, 0) : 0;
    int use_template = argc > 4 && !strcmp(argv[4], "template");
    VkDeviceSize size = (VkDeviceSize)n * sizeof(float);

    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "vk_add", .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                .pApplicationInfo = &app};
    VkInstance instance;
    CHECK(vkCreateInstance(&ici, NULL, &instance));
    uint32_t npd = 0;
    CHECK(vkEnumeratePhysicalDevices(instance, &npd, NULL));
    if (!npd) {
        fprintf(stderr, "vk_add: no Vulkan device\n");
        return 1;
    }
    VkPhysicalDevice pds[8];
    npd = npd > 8 ? 8 : npd;
    vkEnumeratePhysicalDevices(instance, &npd, pds);
    const char *pick = getenv("VK_ADD_DEVICE");
    uint32_t which = pick ? (uint32_t)strtoul(pick, NULL, 0) : 0;
    if (which >= npd) {
        fprintf(stderr, "vk_add: no physical device %u (%u found)\n", which, npd);
        return 1;
    }
    VkPhysicalDevice pd = pds[which];
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(pd, &props);
    printf("device %u of %u: %s\n", which, npd, props.deviceName);

    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    nq = nq > 16 ? 16 : nq;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    uint32_t family = UINT32_MAX;
    for (uint32_t i = 0; i < nq; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
            family = i;
            break;
        }
    if (family == UINT32_MAX) {
        fprintf(stderr, "vk_add: no compute queue\n");
        return 1;
    }
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = family, .queueCount = 1,
                                   .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                              .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
    VkDevice device;
    CHECK(vkCreateDevice(pd, &dci, NULL, &device));
    VkQueue queue;
    vkGetDeviceQueue(device, family, 0, &queue);

    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    VkBuffer buf[3];
    VkDeviceMemory mem[3];
    float *ptr[3];
    for (int i = 0; i < 3; i++) {
        VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                                  .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
                                  .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
        CHECK(vkCreateBuffer(device, &bci, NULL, &buf[i]));
        VkMemoryRequirements req;
        vkGetBufferMemoryRequirements(device, buf[i], &req);
        uint32_t want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
        uint32_t type = UINT32_MAX;
        for (uint32_t t = 0; t < mp.memoryTypeCount; t++)
            if ((req.memoryTypeBits & (1u << t)) && (mp.memoryTypes[t].propertyFlags & want) == want) {
                type = t;
                break;
            }
        if (type == UINT32_MAX) {
            fprintf(stderr, "vk_add: no host-visible coherent memory type\n");
            return 1;
        }
        VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                    .allocationSize = req.size, .memoryTypeIndex = type};
        CHECK(vkAllocateMemory(device, &mai, NULL, &mem[i]));
        CHECK(vkBindBufferMemory(device, buf[i], mem[i], 0));
        CHECK(vkMapMemory(device, mem[i], 0, VK_WHOLE_SIZE, 0, (void **)&ptr[i]));
    }
    for (uint32_t i = 0; i < n; i++) {
        ptr[0][i] = (float)i * 0.5f;
        ptr[1][i] = (float)(n - i) * 0.25f;
        ptr[2][i] = -1.0f;
    }

    size_t code_size;
    uint32_t *code = read_file(argv[1], &code_size);
    VkShaderModuleCreateInfo smci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                     .codeSize = code_size, .pCode = code};
    VkShaderModule module;
    CHECK(vkCreateShaderModule(device, &smci, NULL, &module));

    VkDescriptorSetLayoutBinding bindings[3];
    for (uint32_t i = 0; i < 3; i++)
        bindings[i] = (VkDescriptorSetLayoutBinding){
            .binding = i, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1, .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dslci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, .bindingCount = 3,
        .pBindings = bindings};
    VkDescriptorSetLayout dsl;
    CHECK(vkCreateDescriptorSetLayout(device, &dslci, NULL, &dsl));
    VkPushConstantRange push = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = 4};
    VkPipelineLayoutCreateInfo plci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                       .setLayoutCount = 1, .pSetLayouts = &dsl,
                                       .pushConstantRangeCount = 1,
                                       .pPushConstantRanges = &push};
    VkPipelineLayout layout;
    CHECK(vkCreatePipelineLayout(device, &plci, NULL, &layout));
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT, .module = module, .pName = "main"},
        .layout = layout};
    VkPipeline pipeline;
    CHECK(vkCreateComputePipelines(device, VK_NULL_HANDLE, 1, &cpci, NULL, &pipeline));

    VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = 3};
    VkDescriptorPoolCreateInfo dpci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                       .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &ps};
    VkDescriptorPool dpool;
    CHECK(vkCreateDescriptorPool(device, &dpci, NULL, &dpool));
    VkDescriptorSetAllocateInfo dsai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                        .descriptorPool = dpool, .descriptorSetCount = 1,
                                        .pSetLayouts = &dsl};
    VkDescriptorSet set;
    CHECK(vkAllocateDescriptorSets(device, &dsai, &set));
    VkDescriptorBufferInfo infos[3];
    VkWriteDescriptorSet writes[3];
    for (uint32_t i = 0; i < 3; i++) {
        infos[i] = (VkDescriptorBufferInfo){.buffer = buf[i], .range = VK_WHOLE_SIZE};
        writes[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                           .dstSet = set, .dstBinding = i, .descriptorCount = 1,
                                           .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                           .pBufferInfo = &infos[i]};
    }
    if (use_template) {
        VkDescriptorUpdateTemplateEntry entry = {
            .dstBinding = 0, .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .offset = 0,
            .stride = sizeof infos[0]};
        VkDescriptorUpdateTemplateEntry entries[3];
        for (uint32_t i = 0; i < 3; i++) {
            entries[i] = entry;
            entries[i].dstBinding = i;
            entries[i].offset = i * sizeof infos[0];
        }
        VkDescriptorUpdateTemplateCreateInfo tci = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_UPDATE_TEMPLATE_CREATE_INFO,
            .descriptorUpdateEntryCount = 3, .pDescriptorUpdateEntries = entries,
            .templateType = VK_DESCRIPTOR_UPDATE_TEMPLATE_TYPE_DESCRIPTOR_SET,
            .descriptorSetLayout = dsl};
        VkDescriptorUpdateTemplate tmpl;
        CHECK(vkCreateDescriptorUpdateTemplate(device, &tci, NULL, &tmpl));
        vkUpdateDescriptorSetWithTemplate(device, set, tmpl, infos);
        vkDestroyDescriptorUpdateTemplate(device, tmpl, NULL);
    } else {
        vkUpdateDescriptorSets(device, 3, writes, 0, NULL);
    }

    VkCommandPoolCreateInfo cpoolci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                       .queueFamilyIndex = family};
    VkCommandPool cpool;
    CHECK(vkCreateCommandPool(device, &cpoolci, NULL, &cpool));
    VkCommandBufferAllocateInfo cbai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                        .commandPool = cpool,
                                        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                        .commandBufferCount = 1};
    VkCommandBuffer cb;
    CHECK(vkAllocateCommandBuffers(device, &cbai, &cb));
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = repeat ? 0 : VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    CHECK(vkBeginCommandBuffer(cb, &bi));
    vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, NULL);
    vkCmdPushConstants(cb, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, 4, &n);
    vkCmdDispatch(cb, (n + 63) / 64, 1, 1);
    CHECK(vkEndCommandBuffer(cb));

    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    CHECK(vkCreateFence(device, &fci, NULL, &fence));
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                       .pCommandBuffers = &cb};
    CHECK(vkQueueSubmit(queue, 1, &si, fence));
    CHECK(vkWaitForFences(device, 1, &fence, VK_TRUE, 60ull * 1000 * 1000 * 1000));

    uint32_t bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        float want = (float)i * 0.5f + (float)(n - i) * 0.25f;
        if (ptr[2][i] != want) {
            if (bad < 5)
                fprintf(stderr, "vk_add: c[%u] = %g, expected %g\n", i, ptr[2][i], want);
            bad++;
        }
    }
    if (!bad)
        printf("PASSED vk_add n=%u\n", n);
    fflush(stdout);
    for (unsigned long k = 1; k <= repeat; k++) {
        CHECK(vkResetFences(device, 1, &fence));
        CHECK(vkQueueSubmit(queue, 1, &si, fence));
        CHECK(vkWaitForFences(device, 1, &fence, VK_TRUE, 60ull * 1000 * 1000 * 1000));
        printf("iteration %lu\n", k);
        fflush(stdout);
    }

    vkDestroyFence(device, fence, NULL);
    vkFreeCommandBuffers(device, cpool, 1, &cb);
    vkDestroyCommandPool(device, cpool, NULL);
    vkDestroyDescriptorPool(device, dpool, NULL);
    vkDestroyPipeline(device, pipeline, NULL);
    vkDestroyPipelineLayout(device, layout, NULL);
    vkDestroyDescriptorSetLayout(device, dsl, NULL);
    vkDestroyShaderModule(device, module, NULL);
    for (int i = 0; i < 3; i++) {
        vkUnmapMemory(device, mem[i]);
        vkDestroyBuffer(device, buf[i], NULL);
        vkFreeMemory(device, mem[i], NULL);
    }
    vkDestroyDevice(device, NULL);
    vkDestroyInstance(instance, NULL);
    free(code);
    if (bad) {
        fprintf(stderr, "vk_add: %u of %u elements wrong\n", bad, n);
        return 1;
    }
    return 0;
}
