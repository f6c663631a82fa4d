"""A safe evaluator for arithmetic answers and gold equations such as `( 84.0 / 2.0 )`. Never `eval`."""

from __future__ import annotations

import ast
import math
import operator
import re

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_MAX_EXPONENT = 64
_MAX_LENGTH = 200
_NUMBER_TEXT = re.compile(r"^-?\d+(?:\.\d+)?$")


class UnsafeExpression(ValueError):
    """The text is not a plain arithmetic expression we are willing to evaluate."""


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > _MAX_EXPONENT or abs(left) > 1e6):
            raise UnsafeExpression("exponent too large")
        try:
            value = _BINOPS[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError) as exc:
            raise UnsafeExpression(str(exc)) from exc
        if isinstance(value, complex):  # e.g. (-8) ** 0.5
            raise UnsafeExpression("not a real number")
        return float(value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    raise UnsafeExpression(f"unsupported syntax: {type(node).__name__}")


def evaluate(expression: str) -> float:
    """Evaluate `+ - * / // % **`, parentheses and numbers; raise UnsafeExpression for anything else."""
    text = expression.strip()
    if len(text) > _MAX_LENGTH:
        raise UnsafeExpression("expression too long")
    if _NUMBER_TEXT.match(text):  # the common case, without building a syntax tree
        return float(text)
    text = text.replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise UnsafeExpression(f"not an arithmetic expression: {expression!r}") from exc
    value = _eval_node(tree)
    if not math.isfinite(value):
        raise UnsafeExpression("not a finite number")
    return value


def canonical_number(value: float) -> str:
    """One spelling per number: `42`, `0.5`, `-3.25` (at most 6 decimals)."""
    if not math.isfinite(value):
        raise UnsafeExpression("not a finite number")
    if abs(value) < 1e15 and value == int(value):
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def numbers_equal(a: float, b: float) -> bool:
    """Equal up to a relative tolerance that forgives rounding of printed decimals."""
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
