#include "calc.h"
#include <stdlib.h>
#include <string.h>

static node *parse_sum(lexer *lx);

static node *mk(char op, node *l, node *r) {
    node *n = xmalloc(sizeof *n);
    memset(n, 0, sizeof *n);
    n->op = op; n->lhs = l; n->rhs = r;
    return n;
}

static node *parse_atom(lexer *lx) {
    token t = lx->cur;
    if (t.kind == TOK_NUM) { lexer_next(lx); node *n = mk('n', 0, 0); n->num = t.num; return n; }
    if (t.kind == TOK_IDENT) {
        lexer_next(lx);
        node *n = mk('v', 0, 0);
        memcpy(n->name, t.text, sizeof n->name);
        if (lx->cur.kind == TOK_LPAREN) {
            lexer_next(lx);
            n->op = 'f';
            n->lhs = parse_sum(lx);
            if (lx->cur.kind == TOK_RPAREN) lexer_next(lx);
        }
        return n;
    }
    if (t.kind == TOK_LPAREN) {
        lexer_next(lx);
        node *n = parse_sum(lx);
        if (lx->cur.kind == TOK_RPAREN) lexer_next(lx);
        return n;
    }
    if (t.kind == TOK_OP && t.text[0] == '-') { lexer_next(lx); return mk('~', parse_atom(lx), 0); }
    return mk('e', 0, 0);
}

static node *parse_pow(lexer *lx) {
    node *l = parse_atom(lx);
    if (lx->cur.kind == TOK_OP && lx->cur.text[0] == '^') { lexer_next(lx); return mk('^', l, parse_pow(lx)); }
    return l;
}

static node *parse_prod(lexer *lx) {
    node *l = parse_pow(lx);
    while (lx->cur.kind == TOK_OP && (lx->cur.text[0] == '*' || lx->cur.text[0] == '/')) {
        char op = lx->cur.text[0]; lexer_next(lx); l = mk(op, l, parse_pow(lx));
    }
    return l;
}

static node *parse_sum(lexer *lx) {
    node *l = parse_prod(lx);
    while (lx->cur.kind == TOK_OP && (lx->cur.text[0] == '+' || lx->cur.text[0] == '-')) {
        char op = lx->cur.text[0]; lexer_next(lx); l = mk(op, l, parse_prod(lx));
    }
    return l;
}

node *parse_expr(lexer *lx) {
    node *l = parse_sum(lx);
    if (l->op == 'v' && lx->cur.kind == TOK_OP && lx->cur.text[0] == '=') { lexer_next(lx); return mk('=', l, parse_sum(lx)); }
    return l;
}

void node_free(node *n) { if (!n) return; node_free(n->lhs); node_free(n->rhs); free(n); }
