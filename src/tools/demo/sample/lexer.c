#include "calc.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void lexer_init(lexer *lx, const char *src) { lx->src = src; lx->pos = 0; lexer_next(lx); }

void lexer_next(lexer *lx) {
    const char *s = lx->src;
    while (isspace((unsigned char)s[lx->pos])) lx->pos++;
    char c = s[lx->pos];
    token *t = &lx->cur;
    memset(t, 0, sizeof *t);
    if (c == '\0') { t->kind = TOK_END; return; }
    if (isdigit((unsigned char)c) || c == '.') {
        char *end;
        t->num = strtod(s + lx->pos, &end);
        lx->pos = (size_t)(end - s);
        t->kind = TOK_NUM;
        return;
    }
    if (isalpha((unsigned char)c)) {
        size_t n = 0;
        while (isalnum((unsigned char)s[lx->pos]) && n < sizeof t->text - 1) t->text[n++] = s[lx->pos++];
        t->kind = TOK_IDENT;
        return;
    }
    lx->pos++;
    t->text[0] = c;
    if (c == '(') t->kind = TOK_LPAREN;
    else if (c == ')') t->kind = TOK_RPAREN;
    else if (strchr("+-*/^=", c)) t->kind = TOK_OP;
    else t->kind = TOK_ERR;
}
