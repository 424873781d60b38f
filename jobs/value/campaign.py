"""The campaign a scored list implies: who is worth contacting, in which order, and who fits in the budget.

Pure functions of arrays. Contacting a customer is worth, in expectation,

    expected saved value = p(churn) x expected value x save_rate - contact_cost

(what the contact saves of the value the customer would take away, less what it costs). The campaign ranks the
list by it and takes customers from the top while the budget lasts, never one whose expected saved value is not
positive: such a contact loses money in expectation whatever the budget.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from churnops.value_contract import CampaignBudget, ValueSection


def expected_saved_value(
    churn_probability: np.ndarray, expected_value: np.ndarray, save_rate: float, contact_cost: float
) -> np.ndarray:
    """p(churn) x expected value x save_rate - contact_cost, per customer."""
    p = np.asarray(churn_probability, dtype=np.float64)
    value = np.asarray(expected_value, dtype=np.float64)
    if p.shape != value.shape:
        raise ValueError(f"{p.size} churn probabilities but {value.size} expected values")
    if not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()):
        raise ValueError("churn probability must be a finite probability in [0, 1]")
    if not (np.isfinite(value).all() and (value >= 0).all()):
        raise ValueError("expected value must be finite and not negative")
    return p * value * save_rate - contact_cost


def campaign_ranks(saved_value: np.ndarray) -> np.ndarray:
    """1 for the highest expected saved value, then 2, ...; ties keep the list's order (a stable sort)."""
    order = np.argsort(-np.asarray(saved_value, dtype=np.float64), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def contacts_allowed(budget: CampaignBudget, contact_cost: float) -> int:
    """How many contacts the budget pays for: the count, or the money over the cost of one contact."""
    if budget.customers is not None:
        return budget.customers
    if budget.money is None or contact_cost <= 0:
        raise ValueError("a money budget needs a positive contact_cost (what one contact costs)")
    # A hair of tolerance so that, say, 4000 / 2.0 buys exactly 2000 contacts despite floating point.
    return math.floor(budget.money / contact_cost + 1e-9)


def select_under_budget(saved_value: np.ndarray, budget: CampaignBudget, contact_cost: float) -> np.ndarray:
    """True for the customers the campaign contacts: best expected saved value first, positive ones only, as
    many as the budget allows."""
    saved = np.asarray(saved_value, dtype=np.float64)
    return within_budget(campaign_ranks(saved), saved, contacts_allowed(budget, contact_cost))


def within_budget(ranks: np.ndarray, saved_value: np.ndarray, allowed: int) -> np.ndarray:
    """True for the customers whose campaign rank (over the whole list) the budget reaches, if their expected saved
    value is positive: for any batch of the list once its ranks are known."""
    return (np.asarray(ranks) <= allowed) & (np.asarray(saved_value, dtype=np.float64) > 0)


def campaign_columns(churn_probability: np.ndarray, expected_value: np.ndarray, value: ValueSection) -> pd.DataFrame:
    """The four value columns of a list, in the list's row order."""
    saved = expected_saved_value(churn_probability, expected_value, value.save_rate, value.contact_cost)
    return pd.DataFrame(
        {
            "expected_value": np.asarray(expected_value, dtype=np.float64),
            "expected_saved_value": saved,
            "campaign_rank": campaign_ranks(saved),
            "in_campaign": select_under_budget(saved, value.budget, value.contact_cost),
        }
    )
