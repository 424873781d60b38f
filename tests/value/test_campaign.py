"""The campaign a list implies: expected saved value, its ranking, and who fits in a count or money budget;
and the value gate's promotion rule."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.jobs.value.campaign import (
    campaign_columns,
    campaign_ranks,
    contacts_allowed,
    expected_saved_value,
    select_under_budget,
)
from churnops.jobs.value.gate import decide_value_promotion
from churnops.value_contract import CampaignBudget, ValueSection


def test_expected_saved_value_is_churn_times_value_times_save_rate_less_the_contact_cost() -> None:
    saved = expected_saved_value(np.array([0.5, 0.1, 0.0]), np.array([200.0, 1000.0, 50.0]), 0.2, 3.0)
    np.testing.assert_allclose(saved, [0.5 * 200 * 0.2 - 3, 0.1 * 1000 * 0.2 - 3, -3.0])


@pytest.mark.parametrize(
    ("p", "value", "message"),
    [([1.2], [10.0], "churn probability"), ([0.5], [-1.0], "expected value"), ([0.5, 0.2], [1.0], "2 churn")],
)
def test_expected_saved_value_refuses_impossible_inputs(p: list, value: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expected_saved_value(np.array(p), np.array(value), 0.2, 1.0)


def test_campaign_ranks_put_the_best_saved_value_first_and_keep_list_order_on_ties() -> None:
    assert campaign_ranks(np.array([5.0, 9.0, 5.0, -1.0])).tolist() == [2, 1, 3, 4]


def test_a_count_budget_takes_that_many_customers_from_the_top() -> None:
    saved = np.array([1.0, 7.0, 3.0, 5.0, 2.0])
    chosen = select_under_budget(saved, CampaignBudget(customers=2), contact_cost=1.0)
    assert chosen.tolist() == [False, True, False, True, False]


def test_a_money_budget_pays_for_as_many_contacts_as_it_covers() -> None:
    saved = np.arange(10.0, 0.0, -1.0)  # all worth contacting, best first
    budget = CampaignBudget(money=7.0)
    assert contacts_allowed(budget, contact_cost=2.0) == 3
    assert select_under_budget(saved, budget, contact_cost=2.0).tolist() == [True] * 3 + [False] * 7
    # 4000 / 2.0 is exactly 2000 contacts, whatever floating point makes of the division.
    assert contacts_allowed(CampaignBudget(money=4000.0), contact_cost=2.0) == 2000
    assert contacts_allowed(CampaignBudget(money=0.3), contact_cost=0.1) == 3


def test_a_contact_that_loses_money_is_never_selected_however_large_the_budget() -> None:
    saved = np.array([4.0, -0.5, 0.0, 2.0])
    assert select_under_budget(saved, CampaignBudget(customers=100), contact_cost=1.0).tolist() == [
        True,
        False,
        False,
        True,
    ]


def test_campaign_columns_follow_the_lists_row_order() -> None:
    value = ValueSection(horizon_days=90, contact_cost=1.0, save_rate=0.5, budget=CampaignBudget(customers=1))
    columns = campaign_columns(np.array([0.9, 0.2]), np.array([10.0, 100.0]), value)
    assert columns["expected_saved_value"].tolist() == pytest.approx([3.5, 9.0])
    assert columns["campaign_rank"].tolist() == [2, 1]
    assert columns["in_campaign"].tolist() == [False, True]


def test_a_first_value_model_is_promoted_only_if_it_ranks_better_than_past_spend() -> None:
    assert decide_value_promotion(0.40, None, naive_spearman=0.35).promoted
    refused = decide_value_promotion(0.30, None, naive_spearman=0.35)
    assert not refused.promoted and "naive past-spend rate" in refused.reason


def test_a_value_model_replaces_the_champion_only_with_a_higher_evaluation_spearman() -> None:
    assert decide_value_promotion(0.41, 0.40, naive_spearman=0.9).promoted  # the naive bar is for first models
    assert not decide_value_promotion(0.40, 0.40, naive_spearman=0.1).promoted
    assert not decide_value_promotion(float("nan"), None, naive_spearman=0.1).promoted
