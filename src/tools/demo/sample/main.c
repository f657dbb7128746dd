#include "calc.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    static const char *const demo[] = {"x = 6 * 7", "sqrt(x * x) + 2 ^ 10", "y = (x - 2) / 4", "sin(0) + cos(0) * y", "1 / 0"};
    strbuf out;
    sb_init(&out);
    int n = argc > 1 ? argc - 1 : (int)(sizeof demo / sizeof demo[0]);
    for (int i = 0; i < n; i++) {
        const char *expr = argc > 1 ? argv[i + 1] : demo[i];
        lexer lx;
        lexer_init(&lx, expr);
        node *root = parse_expr(&lx);
        int err = lx.cur.kind == TOK_END ? 0 : 3;
        double v = err ? 0 : eval(root, &err);
        format_result(&out, expr, v, err);
        node_free(root);
    }
    fputs(out.buf, stdout);
    sb_free(&out);
    return 0;
}
