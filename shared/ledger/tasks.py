"""What a customer's state says about its tasks and its pause, for the engine, the agenda and the workspace."""

from __future__ import annotations

from datetime import date

from shared.ledger.state import CustomerState


def paused_on(state: CustomerState, day: date) -> bool:
    """Whether the customer is paused on ``day`` (a day of the tenant): a pause holds through its ``until``,
    inclusive, unless resumed."""
    pause = state.pause
    return pause is not None and day <= date.fromisoformat(pause["until"])
