/* libdeflate (Debian libdeflate-dev) for Swift: whole-buffer raw deflate decoding, used
 * for BGZF members, whose compressed and uncompressed sizes are both known. */
#ifndef IMGTOOL_CLIBDEFLATE_SHIM_H
#define IMGTOOL_CLIBDEFLATE_SHIM_H
#include <stddef.h>
#include <libdeflate.h>
#endif
