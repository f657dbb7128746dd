/* A tiny expression calculator: the demo's bundled multi-file C project. */
#ifndef CALC_H
#define CALC_H
#include <stddef.h>

typedef enum { TOK_NUM, TOK_IDENT, TOK_OP, TOK_LPAREN, TOK_RPAREN, TOK_END, TOK_ERR } tok_kind;
typedef struct { tok_kind kind; double num; char text[32]; } token;
typedef struct { const char *src; size_t pos; token cur; } lexer;

typedef struct node node;
struct node { char op; double num; char name[32]; node *lhs, *rhs; };

typedef struct { char *buf; size_t len, cap; } strbuf;

void lexer_init(lexer *lx, const char *src);
void lexer_next(lexer *lx);
node *parse_expr(lexer *lx);
double eval(const node *n, int *err);
void node_free(node *n);
void sb_init(strbuf *sb);
void sb_puts(strbuf *sb, const char *s);
void sb_printf(strbuf *sb, const char *fmt, ...);
void sb_free(strbuf *sb);
int vars_set(const char *name, double v);
int vars_get(const char *name, double *v);
unsigned long hash_str(const char *s);
double fn_apply(const char *name, double x, int *err);
void *xmalloc(size_t n);
void format_result(strbuf *sb, const char *expr, double v, int err);
#endif
