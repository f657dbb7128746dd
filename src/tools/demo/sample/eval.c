#include "calc.h"
#include <math.h>

static double ipow(double b, double e) {
    double r = 1;
    long n = (long)e;
    if ((double)n != e || n < 0 || n > 1024) return pow(b, e);
    while (n--) r *= b;
    return r;
}

double eval(const node *n, int *err) {
    double a, b;
    switch (n->op) {
    case 'n': return n->num;
    case 'v': if (vars_get(n->name, &a)) return a; *err = 1; return 0;
    case 'f': return fn_apply(n->name, eval(n->lhs, err), err);
    case '~': return -eval(n->lhs, err);
    case '=': a = eval(n->rhs, err); vars_set(n->lhs->name, a); return a;
    case '+': return eval(n->lhs, err) + eval(n->rhs, err);
    case '-': return eval(n->lhs, err) - eval(n->rhs, err);
    case '*': return eval(n->lhs, err) * eval(n->rhs, err);
    case '/': b = eval(n->rhs, err); if (b == 0) { *err = 2; return 0; } return eval(n->lhs, err) / b;
    case '^': return ipow(eval(n->lhs, err), eval(n->rhs, err));
    default: *err = 3; return 0;
    }
}
