/* zlib (Debian zlib1g-dev) for Swift.
 * inflateInit2 and deflateInit2 are macros that pass the library version and the
 * stream size; Swift cannot call macros, so these wrappers do. */
#ifndef IMGTOOL_CZLIB_SHIM_H
#define IMGTOOL_CZLIB_SHIM_H
#include <zlib.h>

static inline int imgtool_inflateInit2(z_streamp stream, int windowBits) {
    return inflateInit2(stream, windowBits);
}

static inline int imgtool_deflateInit2(z_streamp stream, int level, int windowBits, int memLevel) {
    return deflateInit2(stream, level, Z_DEFLATED, windowBits, memLevel, Z_DEFAULT_STRATEGY);
}
#endif
