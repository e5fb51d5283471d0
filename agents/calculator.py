"""calculator: exact decimal arithmetic. The model only picks the operation and its operands;
the tools compute exactly (Decimal, no float rounding) and their result is the answer."""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal, DivisionByZero, InvalidOperation, localcontext
from typing import Any, Literal

from agenthub.sdk import Agent, Model, ToolError, tool

INSTRUCTIONS = "You are a calculator. Call calculate with the two numbers of the question and its operator."


def _exact(value: float | int | str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ToolError(f"not a number: {value!r}") from None


def _show(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


Operator = Literal["+", "-", "*", "/"]
OPERATIONS: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


@tool(return_direct=True)
def calculate(a: float, op: Operator, b: float) -> str:
    """Compute `a op b` exactly; op is one of + - * / (use * for times, / for divided by)."""
    x, y = _exact(a), _exact(b)
    with localcontext() as ctx:
        ctx.prec = 28
        ctx.traps[DivisionByZero] = True
        try:
            result = OPERATIONS[op](x, y)
        except (DivisionByZero, InvalidOperation):
            raise ToolError("division by zero") from None
    return f"{_show(x)} {op} {_show(y)} = {_show(result)}"


def build(
    *, hub: str | None = "127.0.0.1:50051", port: int = 0, model: Model | None = None, **kw: Any
) -> Agent:
    return Agent(
        "calculator",
        description="Exact arithmetic: add, subtract, multiply and divide numbers.",
        instructions=INSTRUCTIONS,
        tools=[calculate],
        tool_choice="required",
        skills=["Exact arithmetic on decimal numbers"],
        model=model,
        hub=hub,
        port=port,
        **kw,
    )


if __name__ == "__main__":
    from agenthub.agents._run import run

    run(build, __doc__ or "")
