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
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class ExpressionError(ValueError):
    """A formula that is not plain arithmetic over KPI names."""


def compile_expression(text: str) -> tuple[tuple[str, ...], Callable[[Lookup], float | None]]:
    """The KPI names ``text`` reads (in order of appearance) and its evaluator.

    The evaluator is one Python function, compiled once from the checked tree (a scope's
    values are finished per window and change: a tree of closures cost a call per node): it
    looks every name up, is None when one is missing, and computes the nodes in the tree's
    order, None at a division by zero."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not an arithmetic formula: {exc.msg}") from None
    names: list[str] = []
    steps: list[str] = []  # one line per node, in the order the tree evaluates them
    constants: list[float] = []

    def build(node: ast.AST) -> str:
        """The node's variable in the generated function (its value)."""
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            # bound as a name, not written as its repr: 1e999 is inf, whose repr is no literal
            constants.append(float(node.value))
            return f"c{len(constants) - 1}"
        if isinstance(node, ast.Name):
            if node.id not in names:
                names.append(node.id)
            return f"n{names.index(node.id)}"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = build(node.operand)
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            steps.append(f"t{len(steps)} = {sign!r} * {inner}")
            return f"t{len(steps) - 1}"
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = build(node.left), build(node.right)
            if type(node.op) is ast.Div:
                steps.append(f"if {right} == 0: return None")
            steps.append(f"t{len(steps)} = {left} {_SYMBOL[type(node.op)]} {right}")
            return f"t{len(steps) - 1}"
        raise ExpressionError(f"{ast.unparse(node)!r} is not allowed (numbers, KPI names, + - * / only)")

    result = build(tree.body)
    if not names:
        raise ExpressionError("the formula names no KPI")
    lines = ["def evaluate(get):"]
    for i, name in enumerate(names):
        lines += [f"    n{i} = get({name!r})", f"    if n{i} is None: return None"]
    lines += [f"    {step}" for step in steps] + [f"    return {result}"]
    scope: dict[str, object] = {f"c{i}": value for i, value in enumerate(constants)}
    exec(compile("\n".join(lines), f"<expression {text!r}>", "exec"), scope)  # noqa: S102
    return tuple(names), scope["evaluate"]  # type: ignore[return-value]
