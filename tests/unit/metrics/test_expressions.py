"""Expression KPIs: the compiled evaluator gives what the formula's tree gives, node by node."""

from __future__ import annotations

import ast
import itertools
import math
import operator

import pytest

from metrics.expressions import ExpressionError, compile_expression

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def reference(node: ast.AST, get) -> float | None:
    """The formula evaluated by walking its tree: None for a missing name, anywhere, or a
    division by zero."""
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return get(node.id)
    if isinstance(node, ast.UnaryOp):
        v = reference(node.operand, get)
        return None if v is None else (-1.0 if isinstance(node.op, ast.USub) else 1.0) * v
    a = reference(node.left, get)
    b = reference(node.right, get)
    if a is None or b is None or (isinstance(node.op, ast.Div) and b == 0):
        return None
    return OPS[type(node.op)](a, b)


FORMULAS = [
    "100 * (p - d) / n",
    "opportunities_open * win_ratio * average_deal_size / (sales_cycle_seconds_avg / 86400)",
    "-a + +b * 2 - a / (b - c)",
    "a / b / c",
    "(a - b) / -(c - 1.5)",
]
SAMPLE = (None, 0.0, -0.0, 1.0, 2.5, -3.0, math.inf, math.nan)


@pytest.mark.parametrize("text", FORMULAS)
def test_the_compiled_evaluator_gives_what_the_tree_gives(text: str) -> None:
    names, evaluate = compile_expression(text)
    tree = ast.parse(text, mode="eval").body
    assert set(names) == {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert len(names) == len(set(names))
    checked = 0
    for values in itertools.product(SAMPLE, repeat=len(names)):
        got = dict(zip(names, values, strict=True))
        want = reference(tree, got.get)
        have = evaluate(got.get)
        if want is None or have is None:
            assert have is want, (values, have, want)
        elif math.isnan(want):
            assert math.isnan(have), values
        else:
            assert have == want and math.copysign(1, have) == math.copysign(1, want), values
        checked += 1
    assert checked == len(SAMPLE) ** len(names)


def test_names_in_order_of_appearance() -> None:
    assert compile_expression("b * a + b / c")[0] == ("b", "a", "c")


@pytest.mark.parametrize("text", ["a ** 2", "f(a)", "a.b", "'x' + a", "2 * 3", "a +"])
def test_anything_but_arithmetic_over_names_is_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(text)


def test_a_constant_beyond_the_float_range_is_infinity_not_an_error() -> None:
    # 1e999 parses to inf, whose repr ("inf") is no Python literal: written into the compiled
    # function as its text it was a NameError at the first evaluation
    names, evaluate = compile_expression("a * 1e999 - 2.5")
    assert names == ("a",)
    assert evaluate(lambda name: 2.0) == math.inf
    assert evaluate(lambda name: -1.0) == -math.inf
