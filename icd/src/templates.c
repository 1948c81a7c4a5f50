/* Descriptor update templates. vkUpdateDescriptorSetWithTemplate's pData has the layout the
 * template describes (offsets and strides into application memory), which only this side can
 * read, so the wire does not carry it (docs/VULKAN_ENCODING.md): the ICD keeps each template's
 * entries and expands an update into the equivalent vkUpdateDescriptorSets. */
#include <stdlib.h>

#include "rgpu_icd.h"

typedef struct rgpu_template {
    uint64_t id;
    uint32_t n;
    VkDescriptorUpdateTemplateEntry *entries;
    VkPipelineBindPoint bind_point; /* for VK_DESCRIPTOR_UPDATE_TEMPLATE_TYPE_PUSH_DESCRIPTORS_KHR */
    struct rgpu_template *next;
} rgpu_template;

static rgpu_template *templates;
static pthread_mutex_t templates_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t forward(const char *name, const uint64_t *args)
{
    return rgpu_forward(rgpu_command_by_name(name)->cmd, args);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_CreateDescriptorUpdateTemplate(
    VkDevice device, const VkDescriptorUpdateTemplateCreateInfo *info,
    const VkAllocationCallbacks *pAllocator, VkDescriptorUpdateTemplate *pTemplate)
{
    rgpu_template *t = calloc(1, sizeof *t);
    if (!t)
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    t->n = info->descriptorUpdateEntryCount;
    t->bind_point = info->pipelineBindPoint;
    t->entries = calloc(t->n ? t->n : 1, sizeof *t->entries);
    if (!t->entries) {
        free(t);
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    }
    memcpy(t->entries, info->pDescriptorUpdateEntries, t->n * sizeof *t->entries);
    uint64_t a[4] = {(uint64_t)(uintptr_t)device, (uint64_t)(uintptr_t)info,
                     (uint64_t)(uintptr_t)pAllocator, (uint64_t)(uintptr_t)pTemplate};
    VkResult st = (VkResult)forward("vkCreateDescriptorUpdateTemplate", a);
    if (st != VK_SUCCESS) {
        free(t->entries);
        free(t);
        return st;
    }
    t->id = (uint64_t)*pTemplate;
    pthread_mutex_lock(&templates_mu);
    t->next = templates;
    templates = t;
    pthread_mutex_unlock(&templates_mu);
    return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL icd_DestroyDescriptorUpdateTemplate(
    VkDevice device, VkDescriptorUpdateTemplate tmpl, const VkAllocationCallbacks *pAllocator)
{
    if (!tmpl)
        return;
    pthread_mutex_lock(&templates_mu);
    for (rgpu_template **pp = &templates; *pp; pp = &(*pp)->next)
        if ((*pp)->id == (uint64_t)tmpl) {
            rgpu_template *t = *pp;
            *pp = t->next;
            free(t->entries);
            free(t);
            break;
        }
    pthread_mutex_unlock(&templates_mu);
    uint64_t a[3] = {(uint64_t)(uintptr_t)device, (uint64_t)tmpl, (uint64_t)(uintptr_t)pAllocator};
    forward("vkDestroyDescriptorUpdateTemplate", a);
}

/* The writes a template describes, read from the application's pData (for a push template
 * dstSet is VK_NULL_HANDLE, as vkCmdPushDescriptorSetKHR wants). */
typedef struct {
    uint32_t n;
    VkWriteDescriptorSet *writes;
    VkWriteDescriptorSetInlineUniformBlock *inl;
    void **infos;
} rgpu_expanded;

static void expanded_free(rgpu_expanded *x)
{
    for (uint32_t i = 0; x->infos && i < x->n; i++)
        free(x->infos[i]);
    free(x->infos);
    free(x->inl);
    free(x->writes);
    memset(x, 0, sizeof *x);
}

static VkResult expand(uint64_t tmpl, VkDescriptorSet set, const void *pData, rgpu_expanded *x)
{
    const uint8_t *data = pData;
    memset(x, 0, sizeof *x);
    pthread_mutex_lock(&templates_mu);
    rgpu_template *t = templates;
    while (t && t->id != tmpl)
        t = t->next;
    if (!t) {
        pthread_mutex_unlock(&templates_mu);
        RGPU_DEBUG("descriptor update template %llu is unknown", (unsigned long long)tmpl);
        return VK_ERROR_UNKNOWN;
    }
    uint32_t n = t->n;
    x->n = n;
    x->writes = calloc(n ? n : 1, sizeof *x->writes);
    x->inl = calloc(n ? n : 1, sizeof *x->inl);
    x->infos = calloc(n ? n : 1, sizeof *x->infos);
    if (!x->writes || !x->inl || !x->infos) {
        pthread_mutex_unlock(&templates_mu);
        expanded_free(x);
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    }
    VkResult st = VK_SUCCESS;
    for (uint32_t i = 0; i < n; i++) {
        const VkDescriptorUpdateTemplateEntry *e = &t->entries[i];
        VkWriteDescriptorSet *w = &x->writes[i];
        w->sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
        w->dstSet = set;
        w->dstBinding = e->dstBinding;
        w->dstArrayElement = e->dstArrayElement;
        w->descriptorCount = e->descriptorCount;
        w->descriptorType = e->descriptorType;
        size_t size = 0;
        int kind = 0; /* 1 image, 2 texel buffer view, 3 buffer */
        switch (e->descriptorType) {
        case VK_DESCRIPTOR_TYPE_SAMPLER:
        case VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER:
        case VK_DESCRIPTOR_TYPE_SAMPLED_IMAGE:
        case VK_DESCRIPTOR_TYPE_STORAGE_IMAGE:
        case VK_DESCRIPTOR_TYPE_INPUT_ATTACHMENT:
            size = sizeof(VkDescriptorImageInfo);
            kind = 1;
            break;
        case VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER:
        case VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER:
            size = sizeof(VkBufferView);
            kind = 2;
            break;
        case VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER:
        case VK_DESCRIPTOR_TYPE_STORAGE_BUFFER:
        case VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER_DYNAMIC:
        case VK_DESCRIPTOR_TYPE_STORAGE_BUFFER_DYNAMIC:
            size = sizeof(VkDescriptorBufferInfo);
            kind = 3;
            break;
        case VK_DESCRIPTOR_TYPE_INLINE_UNIFORM_BLOCK:
            /* descriptorCount is a byte count; the bytes sit at offset */
            x->inl[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET_INLINE_UNIFORM_BLOCK;
            x->inl[i].dataSize = e->descriptorCount;
            x->inl[i].pData = data + e->offset;
            w->pNext = &x->inl[i];
            continue;
        default:
            continue;
        }
        uint8_t *packed = calloc(e->descriptorCount ? e->descriptorCount : 1, size);
        if (!packed) {
            st = VK_ERROR_OUT_OF_HOST_MEMORY;
            break;
        }
        for (uint32_t k = 0; k < e->descriptorCount; k++)
            memcpy(packed + k * size, data + e->offset + (size_t)k * e->stride, size);
        x->infos[i] = packed;
        if (kind == 1)
            w->pImageInfo = (const VkDescriptorImageInfo *)packed;
        else if (kind == 2)
            w->pTexelBufferView = (const VkBufferView *)packed;
        else
            w->pBufferInfo = (const VkDescriptorBufferInfo *)packed;
    }
    pthread_mutex_unlock(&templates_mu);
    if (st != VK_SUCCESS)
        expanded_free(x);
    return st;
}

static VKAPI_ATTR void VKAPI_CALL icd_UpdateDescriptorSetWithTemplate(
    VkDevice device, VkDescriptorSet set, VkDescriptorUpdateTemplate tmpl, const void *pData)
{
    rgpu_expanded x;
    if (expand((uint64_t)tmpl, set, pData, &x) != VK_SUCCESS)
        return;
    uint64_t a[5] = {(uint64_t)(uintptr_t)device, x.n, (uint64_t)(uintptr_t)x.writes, 0, 0};
    forward("vkUpdateDescriptorSets", a);
    expanded_free(&x);
}

/* VK_KHR_push_descriptor with a template: recorded as the vkCmdPushDescriptorSetKHR it
 * stands for (the template carries the bind point, layout and set). */
static VKAPI_ATTR void VKAPI_CALL icd_CmdPushDescriptorSetWithTemplateKHR(
    VkCommandBuffer commandBuffer, VkDescriptorUpdateTemplate tmpl, VkPipelineLayout layout,
    uint32_t set, const void *pData)
{
    pthread_mutex_lock(&templates_mu);
    rgpu_template *t = templates;
    while (t && t->id != (uint64_t)tmpl)
        t = t->next;
    VkPipelineBindPoint bind_point = t ? t->bind_point : VK_PIPELINE_BIND_POINT_GRAPHICS;
    pthread_mutex_unlock(&templates_mu);
    rgpu_expanded x;
    if (expand((uint64_t)tmpl, VK_NULL_HANDLE, pData, &x) != VK_SUCCESS)
        return;
    uint64_t a[6] = {(uint64_t)(uintptr_t)commandBuffer, bind_point, (uint64_t)layout, set, x.n,
                     (uint64_t)(uintptr_t)x.writes};
    forward("vkCmdPushDescriptorSetKHR", a);
    expanded_free(&x);
}

__attribute__((destructor)) static void templates_fini(void)
{
    while (templates) {
        rgpu_template *t = templates;
        templates = t->next;
        free(t->entries);
        free(t);
    }
}

PFN_vkVoidFunction rgpu_template_proc(const char *name);
PFN_vkVoidFunction rgpu_template_proc(const char *name)
{
    if (!strcmp(name, "vkCreateDescriptorUpdateTemplate") ||
        !strcmp(name, "vkCreateDescriptorUpdateTemplateKHR"))
        return (PFN_vkVoidFunction)icd_CreateDescriptorUpdateTemplate;
    if (!strcmp(name, "vkDestroyDescriptorUpdateTemplate") ||
        !strcmp(name, "vkDestroyDescriptorUpdateTemplateKHR"))
        return (PFN_vkVoidFunction)icd_DestroyDescriptorUpdateTemplate;
    if (!strcmp(name, "vkUpdateDescriptorSetWithTemplate") ||
        !strcmp(name, "vkUpdateDescriptorSetWithTemplateKHR"))
        return (PFN_vkVoidFunction)icd_UpdateDescriptorSetWithTemplate;
    if (!strcmp(name, "vkCmdPushDescriptorSetWithTemplateKHR"))
        return (PFN_vkVoidFunction)icd_CmdPushDescriptorSetWithTemplateKHR;
    return NULL;
}
