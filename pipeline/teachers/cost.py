"""What a job's teacher requests cost, and the cap on it: `CostMeter`, shared by the live and the batch engines (and,
on Ray, kept in one actor for all workers)."""

from __future__ import annotations

from stepwise.pipeline.errors import BudgetExhaustedError
from stepwise.pipeline.spec import CostSpec


class CostMeter:
    """Spend so far plus reservations for requests in flight; refuses to start what could pass the cap.

    Async so that one meter can live in another process for a whole job (the Ray executor's shared budget).
    """

    def __init__(self, price: CostSpec | None):
        self.price = price
        self.cap = price.budget_usd if price else None
        self.spent = 0.0
        self.reserved = 0.0

    def try_reserve(self, tokens_in: int, tokens_out_max: int) -> float | None:
        """The reserved worst-case cost, or None when it would pass the cap."""
        if self.price is None:
            return 0.0
        worst = self.price.cost(tokens_in, tokens_out_max) or 0.0
        if self.cap is not None and self.spent + self.reserved + worst > self.cap:
            return None
        self.reserved += worst
        return worst

    def exhausted_message(self) -> str:
        return (f"budget of ${self.cap:.4f} reached (spent ${self.spent:.4f}); "
                f"run again with a higher cost.budget_usd to continue")

    async def reserve(self, tokens_in: int, tokens_out_max: int) -> float:
        reserved = self.try_reserve(tokens_in, tokens_out_max)
        if reserved is None:
            raise BudgetExhaustedError(self.exhausted_message())
        return reserved

    async def settle(self, reserved: float, actual: float | None) -> None:
        self.reserved -= reserved
        self.spent += actual or 0.0
