// SHA-256 from the system's libcrypto (Debian: libssl-dev). Only the digest is used: the
// toolkit hashes files, weights and table contents; it does no TLS.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
