/* OpenSSL's libcrypto (Debian libssl-dev) for Swift: SHA-256 only. */
#ifndef IMGTOOL_CCRYPTO_SHIM_H
#define IMGTOOL_CCRYPTO_SHIM_H
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#endif
