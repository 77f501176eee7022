/* liblzma (Debian liblzma-dev) for Swift.
 * LZMA_STREAM_INIT is a macro initializer; this function returns the same value. */
#ifndef IMGTOOL_CLZMA_SHIM_H
#define IMGTOOL_CLZMA_SHIM_H
#include <lzma.h>

static inline lzma_stream imgtool_lzma_stream_init(void) {
    lzma_stream stream = LZMA_STREAM_INIT;
    return stream;
}

/* Decoder flags are UINT32_C(...) macros, which Swift does not import. */
static const uint32_t IMGTOOL_LZMA_CONCATENATED = LZMA_CONCATENATED;
#endif
