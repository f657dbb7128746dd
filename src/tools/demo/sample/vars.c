#include "calc.h"
#include <string.h>

#define NBUCKET 64
static struct { char name[32]; double v; int used; } table[NBUCKET];

int vars_set(const char *name, double v) {
    unsigned long h = hash_str(name) % NBUCKET;
    for (int i = 0; i < NBUCKET; i++, h = (h + 1) % NBUCKET) {
        if (!table[h].used || strcmp(table[h].name, name) == 0) {
            strncpy(table[h].name, name, sizeof table[h].name - 1);
            table[h].v = v; table[h].used = 1;
            return 1;
        }
    }
    return 0;
}

int vars_get(const char *name, double *v) {
    unsigned long h = hash_str(name) % NBUCKET;
    for (int i = 0; i < NBUCKET && table[h].used; i++, h = (h + 1) % NBUCKET)
        if (strcmp(table[h].name, name) == 0) { *v = table[h].v; return 1; }
    return 0;
}
