"""Arithmetic over other KPIs, for catalog entries of aggregation ``expression``.

Some KPIs of SPEC section 1 are neither a sum nor a ratio of two sums: NPS is
``100 * (promoters - detractors) / responses``, pipeline velocity is
``open × win rate × average deal size / average cycle in days``. An entry writes that formula
over other KPIs' names; it is parsed once (Python's own parser, :mod:`ast`), only numbers, KPI
names, ``+ - * /`` and parentheses are accepted, and it is evaluated per scope from the scope's
finished values, so a team's NPS comes from the team's summed counts, never from rep NPS.
A value is missing when a KPI it names is missing or a division is by zero.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable

Lookup = Callable[[str], "float | None"]

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}


class ExpressionError(ValueError):
    """A formula that is not plain arithmetic over KPI names."""


def compile_expression(text: str) -> tuple[tuple[str, ...], Callable[[Lookup], float | None]]:
    """The KPI names ``text`` reads (in order of appearance) and its evaluator."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not an arithmetic formula: {exc.msg}") from None
    names: list[str] = []

    def build(node: ast.AST) -> Callable[[Lookup], float | None]:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            value = float(node.value)
            return lambda get: value
        if isinstance(node, ast.Name):
            name = node.id
            if name not in names:
                names.append(name)
            return lambda get: get(name)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = build(node.operand)
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0

            def unary(get: Lookup) -> float | None:
                v = inner(get)
                return None if v is None else sign * v
            return unary
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            op = _BINARY[type(node.op)]
            left, right = build(node.left), build(node.right)

            def binary(get: Lookup) -> float | None:
                a = left(get)
                if a is None:
                    return None
                b = right(get)
                if b is None or (op is operator.truediv and b == 0):
                    return None
                return op(a, b)
            return binary
        raise ExpressionError(f"{ast.unparse(node)!r} is not allowed (numbers, KPI names, + - * / only)")

    fn = build(tree.body)
    if not names:
        raise ExpressionError("the formula names no KPI")
    return tuple(names), fn
