#include "calc.h"
#include <math.h>
#include <string.h>

static const struct { const char *name; double (*fn)(double); } funcs[] = {
    {"sin", sin}, {"cos", cos}, {"tan", tan}, {"sqrt", sqrt}, {"exp", exp},
    {"log", log}, {"fabs", fabs}, {"floor", floor}, {"ceil", ceil},
};

double fn_apply(const char *name, double x, int *err) {
    for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++)
        if (strcmp(funcs[i].name, name) == 0) return funcs[i].fn(x);
    *err = 4;
    return 0;
}
