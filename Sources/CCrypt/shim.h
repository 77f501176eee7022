/* libxcrypt (Debian libcrypt-dev) for Swift: crypt_gensalt_rn and crypt_rn. */
#ifndef IMGTOOL_CCRYPT_SHIM_H
#define IMGTOOL_CCRYPT_SHIM_H
#include <crypt.h>
#endif
