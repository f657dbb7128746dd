#include "calc.h"

/* FNV-1a: small, deterministic, good enough for a symbol table. */
unsigned long hash_str(const char *s) {
    unsigned long h = 1469598103934665603UL;
    while (*s) { h ^= (unsigned char)*s++; h *= 1099511628211UL; }
    return h;
}
