/* cuGetProcAddress(_v2) over the generated (name, version, flags) table, and the report of
 * calls the shim does not implement (counted here, told to the daemon once per name). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rgpu_shim.h"

#include "proc_table.h"

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                             CUdriverProcAddressQueryResult *symbolStatus)
{
    if (!symbol || !pfn)
        return CUDA_ERROR_INVALID_VALUE;
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CUresult st = rgpu_proc_lookup(symbol, cudaVersion, flags, pfn, &status);
    if (symbolStatus)
        *symbolStatus = status;
    RGPU_TRACE("cuGetProcAddress %s@%d flags %llu -> %d", symbol, cudaVersion,
               (unsigned long long)flags, (int)st);
    return st;
}

CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
    return cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, NULL);
}

/* ---- unsupported calls ------------------------------------------------------------------- */

#define MAX_REPORTED 256

static pthread_mutex_t unsupported_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const char *name;
    unsigned long count;
} reported[MAX_REPORTED];
static int nreported;

void rgpu_report_unsupported(const char *name)
{
    if (!name)
        name = "?";
    int first = 1;
    pthread_mutex_lock(&unsupported_mu);
    for (int i = 0; i < nreported; i++) {
        if (!strcmp(reported[i].name, name)) {
            reported[i].count++;
            first = 0;
            break;
        }
    }
    if (first && nreported < MAX_REPORTED)
        reported[nreported++] = (typeof(reported[0])){name, 1};
    pthread_mutex_unlock(&unsupported_mu);
    if (!first)
        return;
    rgpu_log_init();
    RGPU_DEBUG("unsupported: %s (CUDA_ERROR_NOT_SUPPORTED)", name);
    if (!rgpu_initialized)
        return; /* nobody to tell yet; the count is kept */
    mp_buf b;
    mp_init(&b);
    mp_map(&b, 3);
    mp_str(&b, "op");
    mp_str(&b, "report_unsupported");
    mp_str(&b, "name");
    mp_str(&b, name);
    mp_str(&b, "count");
    mp_uint(&b, 1);
    rgpu_reply r;
    if (rgpu_control(&b, &r) == CUDA_SUCCESS)
        rgpu_reply_free(&r);
    mp_free(&b);
}
