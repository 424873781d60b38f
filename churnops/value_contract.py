"""The optional `value:` section of a dataset contract: what the value model forecasts and how a campaign is chosen.

A dataset whose events carry a spend per event (the contract's `events.amount`) can ask for each customer's expected
value over a horizon beside the churn score. Scoring then adds the expected saved value of contacting a customer,
p(churn) x expected value x save_rate - contact_cost, ranks the list by it and marks who fits in the budget
(`churnops.jobs.value.campaign`). A contract without the section behaves as before: no value model, no value columns.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The columns scoring adds to a list when the dataset has a value section (churnops/migrations/0012_value_columns.sql).
VALUE_LIST_COLUMNS = ("expected_value", "expected_saved_value", "campaign_rank", "in_campaign")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CampaignBudget(_Strict):
    """How many customers a campaign may contact: a number of customers, or money (contacts x contact_cost)."""

    customers: int | None = Field(None, ge=1)
    money: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> CampaignBudget:
        if (self.customers is None) == (self.money is None):
            raise ValueError("value.budget needs exactly one of `customers` (a count) or `money` (an amount to spend)")
        return self


class ValueSection(_Strict):
    """Expected value per customer over `horizon_days`, learned from the events' amounts (docs/value-model.md)."""

    # The forecast horizon (e.g. 273 days = 39 weeks on CDNOW).
    horizon_days: int = Field(ge=7, le=1100)
    # The training targets' window; the value model extrapolates from it to the horizon through its BTYD offset.
    # Default: the label horizon, capped at `horizon_days`.
    window_days: int | None = Field(None, ge=7, le=1100)
    # Which events are purchases (e.g. `purchase`); None: every event, each worth its amount.
    event_type: str | None = None
    # What one contact costs, in the events' currency, and the share of an at-risk customer's value it saves.
    contact_cost: float = Field(0.0, ge=0.0)
    save_rate: float = Field(gt=0.0, le=1.0)
    budget: CampaignBudget
    # How many training cutoffs the value model learns from (default: the contract's `cutoffs.train_cutoffs`).
    train_cutoffs: int | None = Field(None, ge=2)
    # Optuna trials of the value model's search (each fits one booster per time fold); its own count, not the churn
    # model's, because a value trial costs several churn trials.
    n_trials: int = Field(10, ge=1, le=500)

    @model_validator(mode="after")
    def _window_within_horizon(self) -> ValueSection:
        if self.window_days is not None and self.window_days > self.horizon_days:
            raise ValueError(
                f"value.window_days ({self.window_days}) is longer than value.horizon_days ({self.horizon_days}); "
                "the model trains on a window no longer than the horizon it forecasts"
            )
        if self.budget.money is not None and self.contact_cost == 0:
            raise ValueError("value.budget.money needs a positive value.contact_cost (what one contact costs)")
        return self

    def window_for(self, label_horizon_days: int | None) -> int:
        """The training window: `window_days`, else the label horizon capped at the value horizon."""
        if self.window_days is not None:
            return self.window_days
        return min(label_horizon_days or self.horizon_days, self.horizon_days)
