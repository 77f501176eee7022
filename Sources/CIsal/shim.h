/* ISA-L (Debian libisal-dev) for Swift: igzip, the fast single-thread inflater, its
 * CRC-32, and its zero detection. */
#ifndef IMGTOOL_CISAL_SHIM_H
#define IMGTOOL_CISAL_SHIM_H
#include <stddef.h>
#include <stdint.h>
#include <isa-l/igzip_lib.h>
#include <isa-l/crc.h>
#include <isa-l/mem_routines.h>
#endif
