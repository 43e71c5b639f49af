"""A small CEL interpreter for the subset the Sporelet CRD's x-kubernetes-validations use, so the tests can run the rules.

Covered: literals (int, string with escapes and r"raw" strings, bool, null,
lists), field selection, indexing, ! - * / % + - == != < <= > >= in && || ?:,
the macros has(), all(), exists(), exists_one(), filter(), map(), and the
functions size, matches (RE2 partial match, as CEL's), contains, startsWith,
endsWith, replace, lowerAscii, upperAscii, int, string. Anything else is a
parse error, so a new rule outside the subset fails the test loudly instead of
being skipped. && and || absorb errors as CEL does (false && error is false,
error || true is true). Selecting an absent field is an error (no_such_field).
"""

import re

__all__ = ["CelError", "compile_rule", "evaluate"]


class CelError(Exception):
    pass


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<raw>[rR](?:"[^"\n]*"|'[^'\n]*'))
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<num>\d+)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%!<>?:.,()\[\]{}])
""", re.X)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"',
            "a": "\a", "b": "\b", "f": "\f", "v": "\v", "?": "?", "`": "`"}


def _unquote(body):
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = body[i + 1]
        if n in _ESCAPES:
            out.append(_ESCAPES[n])
            i += 2
        elif n in "xX":
            out.append(chr(int(body[i + 2:i + 4], 16)))
            i += 4
        elif n == "u":
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        else:
            raise CelError("unsupported escape \\%s" % n)
    return "".join(out)


def _tokenize(src):
    pos, toks = 0, []
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m:
            raise CelError("unexpected character %r at %d in %r" % (src[pos], pos, src))
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        if kind == "ws":
            continue
        if kind == "raw":
            toks.append(("lit", text[2:-1]))
        elif kind == "str":
            toks.append(("lit", _unquote(text[1:-1])))
        elif kind == "num":
            toks.append(("lit", int(text)))
        elif kind == "id" and text in ("true", "false", "null"):
            toks.append(("lit", {"true": True, "false": False, "null": None}[text]))
        else:
            toks.append((kind, text))
    toks.append(("end", ""))
    return toks


_BINARY = [("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%")]
_MACROS = ("all", "exists", "exists_one", "filter", "map")
_METHODS = ("size", "matches", "contains", "startsWith", "endsWith", "replace", "lowerAscii", "upperAscii")
_FUNCTIONS = ("size", "int", "string")


class _Parser:
    def __init__(self, src):
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self):
        return self.toks[self.i]

    def take(self, text=None):
        tok = self.toks[self.i]
        if text is not None and tok[1] != text:
            raise CelError("expected %r, found %r in %r" % (text, tok[1], self.src))
        self.i += 1
        return tok

    def parse(self):
        e = self.expr()
        if self.peek()[0] != "end":
            raise CelError("trailing %r in %r" % (self.peek()[1], self.src))
        return e

    def expr(self):
        cond = self.binary(0)
        if self.peek()[1] == "?":
            self.take("?")
            a = self.expr()
            self.take(":")
            b = self.expr()
            return ("cond", cond, a, b)
        return cond

    def binary(self, level):
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] in ("op", "id") and self.peek()[1] in _BINARY[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = ("bin", op, left, right)
        return left

    def unary(self):
        if self.peek()[1] in ("!", "-"):
            op = self.take()[1]
            return ("un", op, self.unary())
        return self.member()

    def args(self):
        out = []
        self.take("(")
        if self.peek()[1] != ")":
            out.append(self.expr())
            while self.peek()[1] == ",":
                self.take(",")
                out.append(self.expr())
        self.take(")")
        return out

    def member(self):
        e = self.primary()
        while True:
            t = self.peek()[1]
            if t == ".":
                self.take(".")
                kind, name = self.take()
                if kind != "id":
                    raise CelError("expected a name after '.' in %r" % self.src)
                if self.peek()[1] == "(":
                    if name in _MACROS:
                        self.take("(")
                        kind, var = self.take()
                        if kind != "id":
                            raise CelError("%s() needs a variable name in %r" % (name, self.src))
                        self.take(",")
                        body = self.expr()
                        self.take(")")
                        e = ("macro", name, e, var, body)
                    elif name in _METHODS:
                        e = ("call", name, e, self.args())
                    else:
                        raise CelError("unsupported method %s() in %r" % (name, self.src))
                else:
                    e = ("sel", e, name)
            elif t == "[":
                self.take("[")
                idx = self.expr()
                self.take("]")
                e = ("index", e, idx)
            else:
                return e

    def primary(self):
        kind, text = self.take()
        if kind == "lit":
            return ("lit", text)
        if kind == "id":
            if self.peek()[1] == "(":
                if text == "has":
                    self.take("(")
                    arg = self.expr()
                    self.take(")")
                    if arg[0] != "sel":
                        raise CelError("has() needs a field selection in %r" % self.src)
                    return ("has", arg)
                if text not in _FUNCTIONS:
                    raise CelError("unsupported function %s() in %r" % (text, self.src))
                return ("call", text, None, self.args())
            return ("var", text)
        if text == "(":
            e = self.expr()
            self.take(")")
            return e
        if text == "[":
            items = []
            if self.peek()[1] != "]":
                items.append(self.expr())
                while self.peek()[1] == ",":
                    self.take(",")
                    items.append(self.expr())
            self.take("]")
            return ("list", items)
        raise CelError("unexpected %r in %r" % (text, self.src))


def compile_rule(src):
    """Parses one rule; raises CelError when it is outside the supported subset."""
    return _Parser(src).parse()


def _size(v):
    if isinstance(v, (str, list, dict)):
        return len(v)
    raise CelError("size() of %s" % type(v).__name__)


def _call(name, target, args):
    if target is None:
        if name == "size" and len(args) == 1:
            return _size(args[0])
        if name == "int" and len(args) == 1:
            return int(args[0])
        if name == "string" and len(args) == 1:
            return args[0] if isinstance(args[0], str) else str(args[0])
        raise CelError("unsupported function %s()" % name)
    if name == "size" and not args:
        return _size(target)
    if not isinstance(target, str):
        raise CelError("%s() on %s" % (name, type(target).__name__))
    if name == "matches":
        return re.search(args[0], target) is not None
    if name == "contains":
        return args[0] in target
    if name == "startsWith":
        return target.startswith(args[0])
    if name == "endsWith":
        return target.endswith(args[0])
    if name == "replace" and len(args) == 2:
        return target.replace(args[0], args[1])
    if name == "lowerAscii":
        return target.lower()
    if name == "upperAscii":
        return target.upper()
    raise CelError("unsupported method %s()" % name)


def _eval(node, env):
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "var":
        if node[1] not in env:
            raise CelError("undeclared reference to %r" % node[1])
        return env[node[1]]
    if kind == "list":
        return [_eval(x, env) for x in node[1]]
    if kind == "sel":
        obj = _eval(node[1], env)
        if not isinstance(obj, dict):
            raise CelError("select .%s on %s" % (node[2], type(obj).__name__))
        if node[2] not in obj:
            raise CelError("no such key: %s" % node[2])
        return obj[node[2]]
    if kind == "has":
        obj = _eval(node[1][1], env)
        if not isinstance(obj, dict):
            raise CelError("has() on %s" % type(obj).__name__)
        return node[1][2] in obj
    if kind == "index":
        obj = _eval(node[1], env)
        idx = _eval(node[2], env)
        try:
            return obj[idx]
        except (KeyError, IndexError, TypeError):
            raise CelError("no such key or index %r" % (idx,))
    if kind == "un":
        v = _eval(node[2], env)
        if node[1] == "!":
            if not isinstance(v, bool):
                raise CelError("! of %s" % type(v).__name__)
            return not v
        return -v
    if kind == "cond":
        c = _eval(node[1], env)
        if not isinstance(c, bool):
            raise CelError("?: condition is %s" % type(c).__name__)
        return _eval(node[2] if c else node[3], env)
    if kind == "bin":
        op = node[1]
        if op in ("&&", "||"):
            decisive = op == "||"
            try:
                left = _eval(node[2], env)
            except CelError:
                right = _eval(node[3], env)
                if right is decisive:
                    return decisive
                raise
            if left is decisive:
                return decisive
            right = _eval(node[3], env)
            if not isinstance(left, bool) or not isinstance(right, bool):
                raise CelError("%s of non-bool" % op)
            return right
        a = _eval(node[2], env)
        b = _eval(node[3], env)
        if op == "==":
            return a == b and type(a) is type(b)
        if op == "!=":
            return not (a == b and type(a) is type(b))
        if op == "in":
            return a in b
        if type(a) is not type(b) or isinstance(a, bool):
            raise CelError("no matching overload for %s on %s, %s" % (op, type(a).__name__, type(b).__name__))
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        if op == ">=":
            return a >= b
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                raise CelError("division by zero")
            return int(a / b)
        if op == "%":
            if b == 0:
                raise CelError("modulus by zero")
            return a - b * int(a / b)
    if kind == "call":
        target = None if node[2] is None else _eval(node[2], env)
        return _call(node[1], target, [_eval(a, env) for a in node[3]])
    if kind == "macro":
        _, name, target_node, var, body = node
        coll = _eval(target_node, env)
        if isinstance(coll, dict):
            items = list(coll.keys())
        elif isinstance(coll, list):
            items = coll
        else:
            raise CelError("%s() on %s" % (name, type(coll).__name__))

        def pred(x):
            scope = dict(env)
            scope[var] = x
            return _eval(body, scope)
        if name == "all":
            return all(pred(x) for x in items)
        if name == "exists":
            return any(pred(x) for x in items)
        if name == "exists_one":
            return sum(1 for x in items if pred(x)) == 1
        if name == "filter":
            return [x for x in items if pred(x)]
        if name == "map":
            return [pred(x) for x in items]
    raise CelError("cannot evaluate %r" % (node,))


def evaluate(rule, self_value, old_self=None):
    """Evaluates a rule with `self` bound; returns the bool it yields (a non-bool result is an error)."""
    ast = compile_rule(rule) if isinstance(rule, str) else rule
    env = {"self": self_value}
    if old_self is not None:
        env["oldSelf"] = old_self
    v = _eval(ast, env)
    if not isinstance(v, bool):
        raise CelError("rule %r gave %r, not a bool" % (rule, v))
    return v
