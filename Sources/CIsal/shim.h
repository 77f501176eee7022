/* ISA-L's igzip (Debian libisal-dev) for Swift: the fast single-thread inflater. */
#ifndef IMGTOOL_CISAL_SHIM_H
#define IMGTOOL_CISAL_SHIM_H
#include <isa-l/igzip_lib.h>
#endif
