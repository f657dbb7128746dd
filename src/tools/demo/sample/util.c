#include "calc.h"
#include <stdio.h>
#include <stdlib.h>

void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) { fputs("calc: out of memory\n", stderr); exit(2); }
    return p;
}

void format_result(strbuf *sb, const char *expr, double v, int err) {
    static const char *const why[] = {"", "unknown variable", "division by zero", "syntax error", "unknown function"};
    if (err) sb_printf(sb, "%s: error: %s\n", expr, why[err > 0 && err < 5 ? err : 3]);
    else sb_printf(sb, "%s = %.10g\n", expr, v);
}
