"""JSONPath as the IoMT FHIR connector's templates write it (Json.NET's dialect), pure.

The connector evaluates template expressions with Json.NET, whose JSONPath takes filters
such as ``$..[?(@telemetry.HeartRate)]`` and ``[?(@systolic && @diastolic)]`` (a member
name straight after ``@``, ``&&`` and ``||``). jsonpath-ng, the common Python library,
refuses both forms (measured: "Parse error at 1:4 near token ?"), so the subset the
templates use is parsed here, bounded: ``$``, ``.name``, ``['name']``, ``[n]``, ``[*]``,
``.*``, ``..`` (recursive descent) and filters of member paths, literals, ``== != < <= >
>=``, ``!``, ``&&``, ``||`` and parentheses. ``..`` inside a filter is refused (it would
make a filter quadratic in the payload).

`compile_path` raises `PathError` naming what is wrong; `CompiledPath.find` never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_EXPRESSION", "CompiledPath", "PathError", "compile_path"]

MAX_EXPRESSION = 1000
_MAX_DEPTH = 64  # nesting of parentheses and filters


class PathError(ValueError):
    """A JSONPath expression egenmon cannot evaluate; the text says why."""


_MISSING = object()

Selector = Callable[[Any], Iterator[Any]]
Predicate = Callable[[Any], bool]


@dataclass(frozen=True)
class CompiledPath:
    text: str
    _selectors: tuple[Selector, ...]

    def find(self, document: Any) -> list[Any]:
        """Every value the path selects in `document`, in document order."""
        nodes = [document]
        for select in self._selectors:
            nodes = [v for n in nodes for v in select(n)]
            if not nodes:
                break
        return nodes


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        yield from node.values()
    elif isinstance(node, list):
        yield from node


def _descendants_or_self(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, dict):
            stack.extend(reversed(list(n.values())))
        elif isinstance(n, list):
            stack.extend(reversed(n))


def _member(name: str) -> Selector:
    def select(node: Any) -> Iterator[Any]:
        if isinstance(node, dict) and name in node:
            yield node[name]

    return select


def _index(i: int) -> Selector:
    def select(node: Any) -> Iterator[Any]:
        if isinstance(node, list) and -len(node) <= i < len(node):
            yield node[i]

    return select


def _filter(pred: Predicate) -> Selector:
    def select(node: Any) -> Iterator[Any]:
        for child in _children(node):
            if pred(child):
                yield child

    return select


def _recursive(inner: Selector) -> Selector:
    def select(node: Any) -> Iterator[Any]:
        for d in _descendants_or_self(node):
            yield from inner(d)

    return select


_NAME = re.compile(r"[A-Za-z_$\u00c0-\uffff][A-Za-z0-9_$\-\u00c0-\uffff]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # -- helpers ----------------------------------------------------------------------

    def error(self, what: str) -> PathError:
        return PathError(f"JSONPath {self.text[:80]!r}: {what} at character {self.pos + 1}")

    def peek(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def take(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str) -> None:
        if not self.take(s):
            raise self.error(f"expected {s!r}")

    def name(self) -> str:
        m = _NAME.match(self.text, self.pos)
        if m is None:
            raise self.error("expected a member name")
        self.pos = m.end()
        return m.group()

    def quoted(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if c == quote:
                self.pos += 1
                return "".join(out)
            out.append(c)
            self.pos += 1
        raise self.error("unterminated string")

    # -- paths ------------------------------------------------------------------------

    def path(self, relative: bool) -> tuple[Selector, ...]:
        selectors: list[Selector] = []
        if relative and self.pos < len(self.text) and _NAME.match(self.text, self.pos):
            selectors.append(_member(self.name()))  # Json.NET's @name for @.name
        while self.pos < len(self.text):
            if self.take(".."):
                if relative:
                    raise self.error("'..' is not supported inside a filter")
                if self.take("*"):
                    selectors.append(_recursive(_children))
                elif self.peek("["):
                    selectors.append(_recursive(self.bracket()))
                else:
                    selectors.append(_recursive(_member(self.name())))
            elif self.take("."):
                selectors.append(_children if self.take("*") else _member(self.name()))
            elif self.peek("["):
                selectors.append(self.bracket())
            else:
                break
        return tuple(selectors)

    def bracket(self) -> Selector:
        self.expect("[")
        self.skip_space()
        if self.take("*"):
            sel: Selector = _children
        elif self.take("?("):
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.error("filters nested too deep")
            pred = self.disjunction()
            self.skip_space()
            self.expect(")")
            self.depth -= 1
            sel = _filter(pred)
        elif self.pos < len(self.text) and self.text[self.pos] in "'\"":
            sel = _member(self.quoted())
        else:
            m = re.compile(r"-?[0-9]+").match(self.text, self.pos)
            if m is None:
                raise self.error("expected *, ?(...), a quoted name or an index")
            self.pos = m.end()
            sel = _index(int(m.group()))
        self.skip_space()
        self.expect("]")
        return sel

    # -- filters ----------------------------------------------------------------------

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while True:
            self.skip_space()
            if not self.take("||"):
                break
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda node: any(p(node) for p in parts)

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while True:
            self.skip_space()
            if not self.take("&&"):
                break
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda node: all(p(node) for p in parts)

    def unary(self) -> Predicate:
        self.skip_space()
        negations = 0
        while self.peek("!") and not self.peek("!="):
            self.pos += 1
            negations += 1
            self.skip_space()
        if negations % 2:
            inner = self.unary()
            return lambda node: not inner(node)
        if self.take("("):
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.error("parentheses nested too deep")
            inner = self.disjunction()
            self.skip_space()
            self.expect(")")
            self.depth -= 1
            return inner
        left = self.operand()
        self.skip_space()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.take(op):
                right = self.operand()
                return _comparison(left, op, right)
        return lambda node: left(node) is not _MISSING

    def operand(self) -> Callable[[Any], Any]:
        self.skip_space()
        if self.take("@"):
            selectors = self.path(relative=True)
            compiled = CompiledPath("@", selectors)

            def value(node: Any) -> Any:
                found = compiled.find(node)
                return found[0] if found else _MISSING

            return value
        if self.pos < len(self.text) and self.text[self.pos] in "'\"":
            literal: Any = self.quoted()
        elif m := _NUMBER.match(self.text, self.pos):
            self.pos = m.end()
            text = m.group()
            literal = float(text) if any(c in text for c in ".eE") else int(text)
        elif self.take("true"):
            literal = True
        elif self.take("false"):
            literal = False
        elif self.take("null"):
            literal = None
        else:
            raise self.error("expected @path or a literal")
        return lambda node: literal


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _comparison(left: Callable[[Any], Any], op: str, right: Callable[[Any], Any]) -> Predicate:
    def test(node: Any) -> bool:
        a, b = left(node), right(node)
        if a is _MISSING or b is _MISSING:
            return op == "!=" and (a is _MISSING) != (b is _MISSING)
        if op == "==":
            return bool(a == b) and (_number(a) == _number(b))
        if op == "!=":
            return not (a == b and _number(a) == _number(b))
        if not ((_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))):
            return False
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)

    return test


def compile_path(text: Any) -> CompiledPath:
    """Parse a JSONPath expression (starting with ``$``); raises PathError."""
    if not isinstance(text, str) or not text.strip():
        raise PathError("a JSONPath expression must be a non-empty string")
    if len(text) > MAX_EXPRESSION:
        raise PathError(f"a JSONPath expression has at most {MAX_EXPRESSION} characters")
    text = text.strip()
    parser = _Parser(text)
    if not parser.take("$"):
        raise parser.error("a JSONPath expression starts with '$'")
    selectors = parser.path(relative=False)
    if parser.pos != len(text):
        raise parser.error("unexpected text")
    return CompiledPath(text, selectors)
