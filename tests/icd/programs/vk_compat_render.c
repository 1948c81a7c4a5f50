/* Offscreen rendering the way real programs write it, for tests/icd/test_icd_compat.py: every
 * line it prints (hashes of read-back images, query results) must be the same through rgpu as
 * on the server's driver run directly.
 *
 * Usage: vk_compat_render TEX.vert.spv TEX.frag.spv
 *
 * - a texture uploaded through a staging buffer (vkCmdCopyBufferToImage, layout transitions by
 *   pipeline barriers), its mip chain made with linear vkCmdBlitImage, sampled with a linear,
 *   mipmapped, repeating sampler;
 * - vertex and index buffers filled by vkCmdCopyBuffer from a staging buffer, indexed draws;
 * - a render pass with a 4x MSAA colour and D32_SFLOAT depth attachment, resolved into a
 *   single-sample image, drawn by a secondary command buffer (vkCmdExecuteCommands) with
 *   dynamic viewport, scissor and blend constants (vkCmdSetBlendConstants: an array argument);
 * - dynamic rendering (vkCmdBeginRendering) with synchronization2 barriers, an image cleared by
 *   vkCmdClearColorImage and loaded, vkCmdDrawIndexedIndirect with two draws,
 *   vkCmdDrawMultiIndexedEXT from an array with a stride larger than its struct, a precise
 *   occlusion query read with VK_QUERY_RESULT_WITH_AVAILABILITY_BIT, the depth attachment read
 *   back;
 * - vkGetDeviceProcAddr: NULL for a command of an extension the device was not created with,
 *   and for core commands newer than the application's apiVersion. */
#include "compat_common.h"

#define W 64
#define H 64
#define TEX 64
#define MIPS 7

static VkPipeline make_pipeline(VkPipelineLayout pl, VkRenderPass rp,
                                VkSampleCountFlagBits samples, const void *pnext,
                                VkShaderModule vs, VkShaderModule fs)
{
    VkPipelineShaderStageCreateInfo st[2] = {
        {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
         .stage = VK_SHADER_STAGE_VERTEX_BIT, .module = vs, .pName = "main"},
        {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
         .stage = VK_SHADER_STAGE_FRAGMENT_BIT, .module = fs, .pName = "main"}};
    VkVertexInputBindingDescription vb = {0, 20, VK_VERTEX_INPUT_RATE_VERTEX};
    VkVertexInputAttributeDescription va[2] = {{0, 0, VK_FORMAT_R32G32B32_SFLOAT, 0},
                                               {1, 0, VK_FORMAT_R32G32_SFLOAT, 12}};
    VkPipelineVertexInputStateCreateInfo vi = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_VERTEX_INPUT_STATE_CREATE_INFO,
        .vertexBindingDescriptionCount = 1, .pVertexBindingDescriptions = &vb,
        .vertexAttributeDescriptionCount = 2, .pVertexAttributeDescriptions = va};
    VkPipelineInputAssemblyStateCreateInfo ia = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_INPUT_ASSEMBLY_STATE_CREATE_INFO,
        .topology = VK_PRIMITIVE_TOPOLOGY_TRIANGLE_LIST};
    VkPipelineViewportStateCreateInfo vp = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_VIEWPORT_STATE_CREATE_INFO, .viewportCount = 1,
        .scissorCount = 1};
    VkPipelineRasterizationStateCreateInfo rs = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_RASTERIZATION_STATE_CREATE_INFO,
        .polygonMode = VK_POLYGON_MODE_FILL, .cullMode = VK_CULL_MODE_NONE, .lineWidth = 1.0f};
    uint32_t mask = 0xffffffff;
    VkPipelineMultisampleStateCreateInfo ms = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_MULTISAMPLE_STATE_CREATE_INFO,
        .rasterizationSamples = samples, .pSampleMask = &mask};
    VkPipelineDepthStencilStateCreateInfo ds = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_DEPTH_STENCIL_STATE_CREATE_INFO,
        .depthTestEnable = 1, .depthWriteEnable = 1, .depthCompareOp = VK_COMPARE_OP_LESS};
    VkPipelineColorBlendAttachmentState cba = {
        .blendEnable = 1, .srcColorBlendFactor = VK_BLEND_FACTOR_CONSTANT_ALPHA,
        .dstColorBlendFactor = VK_BLEND_FACTOR_ONE_MINUS_CONSTANT_ALPHA,
        .colorBlendOp = VK_BLEND_OP_ADD, .srcAlphaBlendFactor = VK_BLEND_FACTOR_ONE,
        .dstAlphaBlendFactor = VK_BLEND_FACTOR_ZERO, .alphaBlendOp = VK_BLEND_OP_ADD,
        .colorWriteMask = 0xf};
    VkPipelineColorBlendStateCreateInfo cb = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_COLOR_BLEND_STATE_CREATE_INFO, .attachmentCount = 1,
        .pAttachments = &cba};
    VkDynamicState dyn[] = {VK_DYNAMIC_STATE_VIEWPORT, VK_DYNAMIC_STATE_SCISSOR,
                            VK_DYNAMIC_STATE_BLEND_CONSTANTS};
    VkPipelineDynamicStateCreateInfo dy = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_DYNAMIC_STATE_CREATE_INFO, .dynamicStateCount = 3,
        .pDynamicStates = dyn};
    VkGraphicsPipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_GRAPHICS_PIPELINE_CREATE_INFO, .pNext = pnext,
        .stageCount = 2, .pStages = st, .pVertexInputState = &vi, .pInputAssemblyState = &ia,
        .pViewportState = &vp, .pRasterizationState = &rs, .pMultisampleState = &ms,
        .pDepthStencilState = &ds, .pColorBlendState = &cb, .pDynamicState = &dy, .layout = pl,
        .renderPass = rp};
    VkPipeline p;
    CHECK(vkCreateGraphicsPipelines(dev, VK_NULL_HANDLE, 1, &ci, NULL, &p));
    return p;
}

/* Copy mip `mip` of an image (in `layout`) into a host buffer and print its hash. */
static void print_image(const char *what, VkImage img, VkImageAspectFlags aspect, uint32_t mip,
                        VkImageLayout layout, uint32_t w, uint32_t h)
{
    Buf b = make_buffer((VkDeviceSize)w * h * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, 1);
    VkCommandBuffer cb = begin_once();
    image_barrier(cb, img, aspect, mip, 1, layout, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL,
                  VK_ACCESS_MEMORY_WRITE_BIT, VK_ACCESS_TRANSFER_READ_BIT,
                  VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT);
    VkBufferImageCopy bic = {.imageSubresource = {aspect, mip, 0, 1}, .imageExtent = {w, h, 1}};
    vkCmdCopyImageToBuffer(cb, img, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, b.buf, 1, &bic);
    host_read_barrier(cb, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT);
    submit_once(cb);
    const uint8_t *p = b.map;
    size_t c = ((size_t)h / 2 * w + w / 2) * 4;
    printf("%s %016llx corner %02x%02x%02x%02x centre %02x%02x%02x%02x\n", what,
           (unsigned long long)fnv1a64(b.map, (size_t)w * h * 4), p[0], p[1], p[2], p[3], p[c],
           p[c + 1], p[c + 2], p[c + 3]);
    free_buffer(&b);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: vk_compat_render TEX.vert.spv TEX.frag.spv\n");
        return 2;
    }
    VkPhysicalDeviceMultiDrawFeaturesEXT multi_draw = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MULTI_DRAW_FEATURES_EXT, .multiDraw = 1};
    VkPhysicalDeviceVulkan13Features f13 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES, .pNext = &multi_draw,
        .synchronization2 = 1, .dynamicRendering = 1};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f13,
                                    .features = {.multiDrawIndirect = 1,
                                                 .occlusionQueryPrecise = 1}};
    const char *exts[] = {VK_EXT_MULTI_DRAW_EXTENSION_NAME};
    init_device("vk_compat_render", &f2, exts, 1);
    PFN_vkCmdDrawMultiIndexedEXT draw_multi_indexed =
        (PFN_vkCmdDrawMultiIndexedEXT)vkGetDeviceProcAddr(dev, "vkCmdDrawMultiIndexedEXT");
    /* an extension the device was not created with (nor supports) has no entry points */
    printf("vkCmdDrawMultiIndexedEXT %s, vkGetPipelineExecutablePropertiesKHR %s\n",
           draw_multi_indexed ? "found" : "missing",
           vkGetDeviceProcAddr(dev, "vkGetPipelineExecutablePropertiesKHR") ? "found" : "absent");
    if (!draw_multi_indexed)
        return 1;
    {   /* nor, for an application that asked for Vulkan 1.1, commands of 1.2 and 1.3 */
        VkApplicationInfo app11 = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                                   .apiVersion = VK_API_VERSION_1_1};
        VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                    .pApplicationInfo = &app11};
        VkInstance inst11;
        VkPhysicalDevice pd11;
        VkDevice dev11;
        uint32_t one = 1;
        CHECK(vkCreateInstance(&ici, NULL, &inst11));
        VkResult er = vkEnumeratePhysicalDevices(inst11, &one, &pd11);
        CHECK(er == VK_INCOMPLETE ? VK_SUCCESS : er);
        float prio = 1.0f;
        VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                       .queueCount = 1, .pQueuePriorities = &prio};
        VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                                  .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
        CHECK(vkCreateDevice(pd11, &dci, NULL, &dev11));
        printf("Vulkan 1.1 application: vkTrimCommandPool %s, vkCmdDrawIndirectCount %s, "
               "vkCmdBeginRendering %s\n",
               vkGetDeviceProcAddr(dev11, "vkTrimCommandPool") ? "found" : "absent",
               vkGetDeviceProcAddr(dev11, "vkCmdDrawIndirectCount") ? "found" : "absent",
               vkGetDeviceProcAddr(dev11, "vkCmdBeginRendering") ? "found" : "absent");
        vkDestroyDevice(dev11, NULL);
        vkDestroyInstance(inst11, NULL);
    }
    VkShaderModule vs = load_shader(argv[1]), fs = load_shader(argv[2]);

    /* the texture: staging upload, then a mip chain by blits */
    Buf staging = make_buffer(TEX * TEX * 4, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, 1);
    uint8_t *px = staging.map;
    for (int y = 0; y < TEX; y++)
        for (int x = 0; x < TEX; x++) {
            uint8_t *q = px + (y * TEX + x) * 4;
            q[0] = (uint8_t)(x * 4);
            q[1] = (uint8_t)(y * 4);
            q[2] = ((x / 8 + y / 8) & 1) * 255;
            q[3] = 200;
        }
    Img tex = make_image(VK_FORMAT_R8G8B8A8_UNORM, TEX, TEX, MIPS, VK_SAMPLE_COUNT_1_BIT,
                         VK_IMAGE_USAGE_SAMPLED_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT |
                             VK_IMAGE_USAGE_TRANSFER_SRC_BIT,
                         VK_IMAGE_ASPECT_COLOR_BIT);
    const VkImageAspectFlags color = VK_IMAGE_ASPECT_COLOR_BIT;
    VkCommandBuffer cb = begin_once();
    image_barrier(cb, tex.img, color, 0, MIPS, VK_IMAGE_LAYOUT_UNDEFINED,
                  VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 0, VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT);
    VkBufferImageCopy up = {.imageSubresource = {color, 0, 0, 1}, .imageExtent = {TEX, TEX, 1}};
    vkCmdCopyBufferToImage(cb, staging.buf, tex.img, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1, &up);
    for (uint32_t m = 1; m < MIPS; m++) {
        image_barrier(cb, tex.img, color, m - 1, 1, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                      VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, VK_ACCESS_TRANSFER_WRITE_BIT,
                      VK_ACCESS_TRANSFER_READ_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
                      VK_PIPELINE_STAGE_TRANSFER_BIT);
        int32_t s = TEX >> (m - 1), d = TEX >> m;
        VkImageBlit bl = {.srcSubresource = {color, m - 1, 0, 1},
                          .srcOffsets = {{0, 0, 0}, {s, s, 1}},
                          .dstSubresource = {color, m, 0, 1},
                          .dstOffsets = {{0, 0, 0}, {d, d, 1}}};
        vkCmdBlitImage(cb, tex.img, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, tex.img,
                       VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1, &bl, VK_FILTER_LINEAR);
        image_barrier(cb, tex.img, color, m - 1, 1, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL,
                      VK_IMAGE_LAYOUT_SHADER_READ_ONLY_OPTIMAL, VK_ACCESS_TRANSFER_READ_BIT,
                      VK_ACCESS_SHADER_READ_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
                      VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT);
    }
    image_barrier(cb, tex.img, color, MIPS - 1, 1, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                  VK_IMAGE_LAYOUT_SHADER_READ_ONLY_OPTIMAL, VK_ACCESS_TRANSFER_WRITE_BIT,
                  VK_ACCESS_SHADER_READ_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
                  VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT);
    submit_once(cb);
    VkSamplerCreateInfo sci = {.sType = VK_STRUCTURE_TYPE_SAMPLER_CREATE_INFO,
                               .magFilter = VK_FILTER_LINEAR, .minFilter = VK_FILTER_LINEAR,
                               .mipmapMode = VK_SAMPLER_MIPMAP_MODE_LINEAR,
                               .addressModeU = VK_SAMPLER_ADDRESS_MODE_REPEAT,
                               .addressModeV = VK_SAMPLER_ADDRESS_MODE_MIRRORED_REPEAT,
                               .addressModeW = VK_SAMPLER_ADDRESS_MODE_REPEAT, .maxLod = 16.0f,
                               .borderColor = VK_BORDER_COLOR_FLOAT_OPAQUE_BLACK};
    VkSampler sampler;
    CHECK(vkCreateSampler(dev, &sci, NULL, &sampler));
    VkDescriptorSetLayoutBinding b0 = {0, VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER, 1,
                                       VK_SHADER_STAGE_FRAGMENT_BIT, NULL};
    VkDescriptorSetLayoutCreateInfo lci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, .bindingCount = 1,
        .pBindings = &b0};
    VkDescriptorSetLayout dsl;
    CHECK(vkCreateDescriptorSetLayout(dev, &lci, NULL, &dsl));
    VkPushConstantRange pcr = {VK_SHADER_STAGE_VERTEX_BIT, 0, 16};
    VkPipelineLayoutCreateInfo plci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                       .setLayoutCount = 1, .pSetLayouts = &dsl,
                                       .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr};
    VkPipelineLayout pl;
    CHECK(vkCreatePipelineLayout(dev, &plci, NULL, &pl));
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER, 1};
    VkDescriptorPoolCreateInfo dpci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                       .maxSets = 1, .poolSizeCount = 1, .pPoolSizes = &ps};
    VkDescriptorPool dp;
    CHECK(vkCreateDescriptorPool(dev, &dpci, NULL, &dp));
    VkDescriptorSetAllocateInfo dsai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                        .descriptorPool = dp, .descriptorSetCount = 1,
                                        .pSetLayouts = &dsl};
    VkDescriptorSet set;
    CHECK(vkAllocateDescriptorSets(dev, &dsai, &set));
    VkDescriptorImageInfo dii = {sampler, tex.view, VK_IMAGE_LAYOUT_SHADER_READ_ONLY_OPTIMAL};
    VkWriteDescriptorSet wds = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set,
                                .descriptorCount = 1,
                                .descriptorType = VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER,
                                .pImageInfo = &dii};
    vkUpdateDescriptorSets(dev, 1, &wds, 0, NULL);

    /* two overlapping quads at different depths, in device-local buffers */
    const float verts[] = {-0.8f, -0.8f, 0.5f, 0, 0, 0.6f,  -0.8f, 0.5f, 1, 0,
                           0.6f,  0.6f,  0.5f, 1, 1, -0.8f, 0.6f,  0.5f, 0, 1,
                           -0.4f, -0.4f, 0.3f, 0, 0, 0.9f,  -0.3f, 0.3f, 1, 0,
                           0.8f,  0.9f,  0.7f, 1, 1, -0.3f, 0.8f,  0.7f, 0, 1};
    const uint16_t idx[] = {0, 1, 2, 2, 3, 0, 4, 5, 6, 6, 7, 4};
    Buf vstage = make_buffer(sizeof verts + sizeof idx, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, 1);
    memcpy(vstage.map, verts, sizeof verts);
    memcpy((char *)vstage.map + sizeof verts, idx, sizeof idx);
    Buf vbuf = make_buffer(sizeof verts, VK_BUFFER_USAGE_VERTEX_BUFFER_BIT |
                                             VK_BUFFER_USAGE_TRANSFER_DST_BIT, 0);
    Buf ibuf = make_buffer(sizeof idx, VK_BUFFER_USAGE_INDEX_BUFFER_BIT |
                                           VK_BUFFER_USAGE_TRANSFER_DST_BIT, 0);
    Buf indirect = make_buffer(64, VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT, 1);
    VkDrawIndexedIndirectCommand draws[2] = {{6, 1, 0, 0, 0}, {6, 1, 6, 0, 0}};
    memcpy(indirect.map, draws, sizeof draws);
    cb = begin_once();
    VkBufferCopy c1 = {0, 0, sizeof verts}, c2 = {sizeof verts, 0, sizeof idx};
    vkCmdCopyBuffer(cb, vstage.buf, vbuf.buf, 1, &c1);
    vkCmdCopyBuffer(cb, vstage.buf, ibuf.buf, 1, &c2);
    submit_once(cb);

    /* a render pass: 4x MSAA colour + D32 depth, resolved */
    VkAttachmentDescription att[3] = {
        {0, VK_FORMAT_R8G8B8A8_UNORM, VK_SAMPLE_COUNT_4_BIT, VK_ATTACHMENT_LOAD_OP_CLEAR,
         VK_ATTACHMENT_STORE_OP_DONT_CARE, VK_ATTACHMENT_LOAD_OP_DONT_CARE,
         VK_ATTACHMENT_STORE_OP_DONT_CARE, VK_IMAGE_LAYOUT_UNDEFINED,
         VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL},
        {0, VK_FORMAT_D32_SFLOAT, VK_SAMPLE_COUNT_4_BIT, VK_ATTACHMENT_LOAD_OP_CLEAR,
         VK_ATTACHMENT_STORE_OP_DONT_CARE, VK_ATTACHMENT_LOAD_OP_DONT_CARE,
         VK_ATTACHMENT_STORE_OP_DONT_CARE, VK_IMAGE_LAYOUT_UNDEFINED,
         VK_IMAGE_LAYOUT_DEPTH_STENCIL_ATTACHMENT_OPTIMAL},
        {0, VK_FORMAT_R8G8B8A8_UNORM, VK_SAMPLE_COUNT_1_BIT, VK_ATTACHMENT_LOAD_OP_DONT_CARE,
         VK_ATTACHMENT_STORE_OP_STORE, VK_ATTACHMENT_LOAD_OP_DONT_CARE,
         VK_ATTACHMENT_STORE_OP_DONT_CARE, VK_IMAGE_LAYOUT_UNDEFINED,
         VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL}};
    VkAttachmentReference cref = {0, VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL};
    VkAttachmentReference dref = {1, VK_IMAGE_LAYOUT_DEPTH_STENCIL_ATTACHMENT_OPTIMAL};
    VkAttachmentReference rref = {2, VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL};
    VkSubpassDescription sp = {.pipelineBindPoint = VK_PIPELINE_BIND_POINT_GRAPHICS,
                               .colorAttachmentCount = 1, .pColorAttachments = &cref,
                               .pResolveAttachments = &rref, .pDepthStencilAttachment = &dref};
    VkSubpassDependency dep = {
        VK_SUBPASS_EXTERNAL, 0,
        VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT | VK_PIPELINE_STAGE_EARLY_FRAGMENT_TESTS_BIT,
        VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT | VK_PIPELINE_STAGE_EARLY_FRAGMENT_TESTS_BIT,
        0, VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT | VK_ACCESS_DEPTH_STENCIL_ATTACHMENT_WRITE_BIT, 0};
    VkRenderPassCreateInfo rpci = {.sType = VK_STRUCTURE_TYPE_RENDER_PASS_CREATE_INFO,
                                   .attachmentCount = 3, .pAttachments = att, .subpassCount = 1,
                                   .pSubpasses = &sp, .dependencyCount = 1,
                                   .pDependencies = &dep};
    VkRenderPass rp;
    CHECK(vkCreateRenderPass(dev, &rpci, NULL, &rp));
    Img msc = make_image(VK_FORMAT_R8G8B8A8_UNORM, W, H, 1, VK_SAMPLE_COUNT_4_BIT,
                         VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT, color);
    Img msd = make_image(VK_FORMAT_D32_SFLOAT, W, H, 1, VK_SAMPLE_COUNT_4_BIT,
                         VK_IMAGE_USAGE_DEPTH_STENCIL_ATTACHMENT_BIT, VK_IMAGE_ASPECT_DEPTH_BIT);
    Img resolved = make_image(VK_FORMAT_R8G8B8A8_UNORM, W, H, 1, VK_SAMPLE_COUNT_1_BIT,
                              VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT |
                                  VK_IMAGE_USAGE_TRANSFER_SRC_BIT, color);
    VkImageView views[3] = {msc.view, msd.view, resolved.view};
    VkFramebufferCreateInfo fbci = {.sType = VK_STRUCTURE_TYPE_FRAMEBUFFER_CREATE_INFO,
                                    .renderPass = rp, .attachmentCount = 3,
                                    .pAttachments = views, .width = W, .height = H,
                                    .layers = 1};
    VkFramebuffer fb;
    CHECK(vkCreateFramebuffer(dev, &fbci, NULL, &fb));
    VkPipeline msaa_pipe = make_pipeline(pl, rp, VK_SAMPLE_COUNT_4_BIT, NULL, vs, fs);
    VkFormat cfmt = VK_FORMAT_R8G8B8A8_UNORM;
    VkPipelineRenderingCreateInfo prci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_RENDERING_CREATE_INFO, .colorAttachmentCount = 1,
        .pColorAttachmentFormats = &cfmt, .depthAttachmentFormat = VK_FORMAT_D32_SFLOAT};
    VkPipeline dyn_pipe = make_pipeline(pl, VK_NULL_HANDLE, VK_SAMPLE_COUNT_1_BIT, &prci, vs, fs);

    VkCommandBuffer sec;
    VkCommandBufferAllocateInfo sai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_SECONDARY,
                                       .commandBufferCount = 1};
    CHECK(vkAllocateCommandBuffers(dev, &sai, &sec));
    VkCommandBufferInheritanceInfo inh = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_INHERITANCE_INFO,
                                          .renderPass = rp, .subpass = 0, .framebuffer = fb};
    VkCommandBufferBeginInfo sbi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                    .flags = VK_COMMAND_BUFFER_USAGE_RENDER_PASS_CONTINUE_BIT,
                                    .pInheritanceInfo = &inh};
    CHECK(vkBeginCommandBuffer(sec, &sbi));
    VkViewport viewport = {0, 0, W, H, 0, 1};
    VkRect2D scissor = {{0, 0}, {W, H}};
    const float blend[4] = {0.5f, 0.5f, 0.5f, 0.6f};
    VkDeviceSize zero = 0;
    const float offset[4] = {0.05f, 0, 0, 0};
    vkCmdBindPipeline(sec, VK_PIPELINE_BIND_POINT_GRAPHICS, msaa_pipe);
    vkCmdSetViewport(sec, 0, 1, &viewport);
    vkCmdSetScissor(sec, 0, 1, &scissor);
    vkCmdSetBlendConstants(sec, blend);
    vkCmdBindDescriptorSets(sec, VK_PIPELINE_BIND_POINT_GRAPHICS, pl, 0, 1, &set, 0, NULL);
    vkCmdBindVertexBuffers(sec, 0, 1, &vbuf.buf, &zero);
    vkCmdBindIndexBuffer(sec, ibuf.buf, 0, VK_INDEX_TYPE_UINT16);
    vkCmdPushConstants(sec, pl, VK_SHADER_STAGE_VERTEX_BIT, 0, 16, offset);
    vkCmdDrawIndexed(sec, 12, 1, 0, 0, 0);
    CHECK(vkEndCommandBuffer(sec));
    cb = begin_once();
    VkClearValue cv[3] = {{.color = {{0.1f, 0.2f, 0.3f, 1.0f}}}, {.depthStencil = {1.0f, 0}},
                          {.color = {{0}}}};
    VkRenderPassBeginInfo rpbi = {.sType = VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO,
                                  .renderPass = rp, .framebuffer = fb,
                                  .renderArea = {{0, 0}, {W, H}}, .clearValueCount = 3,
                                  .pClearValues = cv};
    vkCmdBeginRenderPass(cb, &rpbi, VK_SUBPASS_CONTENTS_SECONDARY_COMMAND_BUFFERS);
    vkCmdExecuteCommands(cb, 1, &sec);
    vkCmdEndRenderPass(cb);
    submit_once(cb);
    print_image("msaa resolve", resolved.img, color, 0, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, W, H);

    /* dynamic rendering, synchronization2, indirect indexed draws, an occlusion query */
    VkQueryPoolCreateInfo qpci = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                  .queryType = VK_QUERY_TYPE_OCCLUSION, .queryCount = 1};
    VkQueryPool qp;
    CHECK(vkCreateQueryPool(dev, &qpci, NULL, &qp));
    Img target = make_image(VK_FORMAT_R8G8B8A8_UNORM, W, H, 1, VK_SAMPLE_COUNT_1_BIT,
                            VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT |
                                VK_IMAGE_USAGE_TRANSFER_DST_BIT, color);
    Img depth = make_image(VK_FORMAT_D32_SFLOAT, W, H, 1, VK_SAMPLE_COUNT_1_BIT,
                           VK_IMAGE_USAGE_DEPTH_STENCIL_ATTACHMENT_BIT |
                               VK_IMAGE_USAGE_TRANSFER_SRC_BIT, VK_IMAGE_ASPECT_DEPTH_BIT);
    cb = begin_once();
    vkCmdResetQueryPool(cb, qp, 0, 1);
    VkImageMemoryBarrier2 ib[2] = {
        {.sType = VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER_2,
         .srcStageMask = VK_PIPELINE_STAGE_2_NONE, .dstStageMask = VK_PIPELINE_STAGE_2_CLEAR_BIT,
         .dstAccessMask = VK_ACCESS_2_TRANSFER_WRITE_BIT,
         .oldLayout = VK_IMAGE_LAYOUT_UNDEFINED, .newLayout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
         .srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
         .dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED, .image = target.img,
         .subresourceRange = {color, 0, 1, 0, 1}},
        {.sType = VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER_2,
         .srcStageMask = VK_PIPELINE_STAGE_2_NONE,
         .dstStageMask = VK_PIPELINE_STAGE_2_EARLY_FRAGMENT_TESTS_BIT,
         .dstAccessMask = VK_ACCESS_2_DEPTH_STENCIL_ATTACHMENT_WRITE_BIT,
         .oldLayout = VK_IMAGE_LAYOUT_UNDEFINED,
         .newLayout = VK_IMAGE_LAYOUT_DEPTH_ATTACHMENT_OPTIMAL,
         .srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
         .dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED, .image = depth.img,
         .subresourceRange = {VK_IMAGE_ASPECT_DEPTH_BIT, 0, 1, 0, 1}}};
    VkDependencyInfo di = {.sType = VK_STRUCTURE_TYPE_DEPENDENCY_INFO,
                           .imageMemoryBarrierCount = 2, .pImageMemoryBarriers = ib};
    vkCmdPipelineBarrier2(cb, &di);
    VkClearColorValue ccv = {.float32 = {0.9f, 0.1f, 0.1f, 1.0f}};
    VkImageSubresourceRange range = {color, 0, 1, 0, 1};
    vkCmdClearColorImage(cb, target.img, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, &ccv, 1, &range);
    VkImageMemoryBarrier2 ib2 = {
        .sType = VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER_2,
        .srcStageMask = VK_PIPELINE_STAGE_2_CLEAR_BIT,
        .srcAccessMask = VK_ACCESS_2_TRANSFER_WRITE_BIT,
        .dstStageMask = VK_PIPELINE_STAGE_2_COLOR_ATTACHMENT_OUTPUT_BIT,
        .dstAccessMask = VK_ACCESS_2_COLOR_ATTACHMENT_WRITE_BIT |
                         VK_ACCESS_2_COLOR_ATTACHMENT_READ_BIT,
        .oldLayout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
        .newLayout = VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL,
        .srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
        .dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED, .image = target.img,
        .subresourceRange = range};
    VkDependencyInfo di2 = {.sType = VK_STRUCTURE_TYPE_DEPENDENCY_INFO,
                            .imageMemoryBarrierCount = 1, .pImageMemoryBarriers = &ib2};
    vkCmdPipelineBarrier2(cb, &di2);
    VkRenderingAttachmentInfo ca = {.sType = VK_STRUCTURE_TYPE_RENDERING_ATTACHMENT_INFO,
                                    .imageView = target.view,
                                    .imageLayout = VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL,
                                    .loadOp = VK_ATTACHMENT_LOAD_OP_LOAD,
                                    .storeOp = VK_ATTACHMENT_STORE_OP_STORE};
    VkRenderingAttachmentInfo da = {.sType = VK_STRUCTURE_TYPE_RENDERING_ATTACHMENT_INFO,
                                    .imageView = depth.view,
                                    .imageLayout = VK_IMAGE_LAYOUT_DEPTH_ATTACHMENT_OPTIMAL,
                                    .loadOp = VK_ATTACHMENT_LOAD_OP_CLEAR,
                                    .storeOp = VK_ATTACHMENT_STORE_OP_STORE,
                                    .clearValue = {.depthStencil = {0.9f, 0}}};
    VkRenderingInfo ri = {.sType = VK_STRUCTURE_TYPE_RENDERING_INFO,
                          .renderArea = {{0, 0}, {W, H}}, .layerCount = 1,
                          .colorAttachmentCount = 1, .pColorAttachments = &ca,
                          .pDepthAttachment = &da};
    vkCmdBeginQuery(cb, qp, 0, VK_QUERY_CONTROL_PRECISE_BIT);
    vkCmdBeginRendering(cb, &ri);
    vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_GRAPHICS, dyn_pipe);
    VkViewport vp2 = {4, 2, W - 8, H - 4, 0, 1};
    VkRect2D sc2 = {{2, 2}, {W - 4, H - 8}};
    const float blend2[4] = {0.2f, 0.4f, 0.6f, 0.8f};
    const float offset2[4] = {-0.1f, 0.05f, 0, 0};
    vkCmdSetViewport(cb, 0, 1, &vp2);
    vkCmdSetScissor(cb, 0, 1, &sc2);
    vkCmdSetBlendConstants(cb, blend2);
    vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_GRAPHICS, pl, 0, 1, &set, 0, NULL);
    vkCmdBindVertexBuffers(cb, 0, 1, &vbuf.buf, &zero);
    vkCmdBindIndexBuffer(cb, ibuf.buf, 0, VK_INDEX_TYPE_UINT16);
    vkCmdPushConstants(cb, pl, VK_SHADER_STAGE_VERTEX_BIT, 0, 16, offset2);
    vkCmdDrawIndexedIndirect(cb, indirect.buf, 0, 2, sizeof(VkDrawIndexedIndirectCommand));
    /* the same quads again, shifted, from an array with a stride of the application's own */
    struct {
        VkMultiDrawIndexedInfoEXT draw;
        uint32_t tag[3];
    } multi[2] = {{{0, 6, 0}, {1, 2, 3}}, {{6, 6, 0}, {4, 5, 6}}};
    const float offset3[4] = {0.15f, -0.1f, -0.05f, 0};
    vkCmdPushConstants(cb, pl, VK_SHADER_STAGE_VERTEX_BIT, 0, 16, offset3);
    draw_multi_indexed(cb, 2, &multi[0].draw, 1, 0, sizeof multi[0], NULL);
    vkCmdEndRendering(cb);
    vkCmdEndQuery(cb, qp, 0);
    submit_once(cb);
    uint64_t occ[2] = {0};
    VkResult qr = vkGetQueryPoolResults(dev, qp, 0, 1, sizeof occ, occ, 16,
                                        VK_QUERY_RESULT_64_BIT |
                                            VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
    printf("occlusion query: VkResult %d, %llu samples, available %llu\n", (int)qr,
           (unsigned long long)occ[0], (unsigned long long)occ[1]);
    print_image("dynamic rendering colour", target.img, color, 0,
                VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL, W, H);
    print_image("dynamic rendering depth", depth.img, VK_IMAGE_ASPECT_DEPTH_BIT, 0,
                VK_IMAGE_LAYOUT_DEPTH_ATTACHMENT_OPTIMAL, W, H);
    print_image("texture mip 3", tex.img, color, 3, VK_IMAGE_LAYOUT_SHADER_READ_ONLY_OPTIMAL,
                TEX >> 3, TEX >> 3);

    CHECK(vkQueueWaitIdle(queue));
    vkDestroyQueryPool(dev, qp, NULL);
    vkDestroyPipeline(dev, msaa_pipe, NULL);
    vkDestroyPipeline(dev, dyn_pipe, NULL);
    vkDestroyFramebuffer(dev, fb, NULL);
    vkDestroyRenderPass(dev, rp, NULL);
    Img *imgs[] = {&tex, &msc, &msd, &resolved, &target, &depth};
    for (size_t i = 0; i < sizeof imgs / sizeof imgs[0]; i++)
        free_image(imgs[i]);
    Buf *bufs[] = {&staging, &vstage, &vbuf, &ibuf, &indirect};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free_buffer(bufs[i]);
    vkDestroySampler(dev, sampler, NULL);
    vkDestroyDescriptorPool(dev, dp, NULL);
    vkDestroyPipelineLayout(dev, pl, NULL);
    vkDestroyDescriptorSetLayout(dev, dsl, NULL);
    vkDestroyShaderModule(dev, vs, NULL);
    vkDestroyShaderModule(dev, fs, NULL);
    finish();
    printf("PASSED vk_compat_render\n");
    return 0;
}
