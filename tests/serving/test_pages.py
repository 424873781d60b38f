"""The teams' pages through the real app (TestClient): sign-in, refusals, filters, budget, paging, export, customer,
model. The browser tests are in test_pages_browser.py."""

from __future__ import annotations

import csv
import io
import re

import pandas as pd
import psycopg2
import pytest
from fastapi.testclient import TestClient

from churnops.serving.app import create_app
from churnops.serving.pages.auth import SESSION_COOKIE
from tests.serving.pages_platform import PAGES_API_KEY, platform_with_records


@pytest.fixture(scope="module")
def settings(trained_platform, platform_database_url, tmp_path_factory):
    return platform_with_records(trained_platform, platform_database_url, tmp_path_factory.mktemp("pages") / "home")


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings), headers={"X-API-Key": PAGES_API_KEY}) as client:
        yield client


@pytest.fixture(scope="module")
def stored_list(settings, platform_database_url) -> list[tuple[str, float, str]]:
    """The list as the database holds it, highest risk first: (customer_id, score, band)."""
    with psycopg2.connect(platform_database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, score, risk_band FROM churnops.scores WHERE dataset = 'synthetic' "
            "AND list_kind = 'regular' ORDER BY score DESC, customer_id"
        )
        return cur.fetchall()


def shown_customers(html: str) -> list[str]:
    return re.findall(r'<a href="/pages/customers/[^"]*">([^<]+)</a>', html)


@pytest.mark.parametrize("path", ["/pages/list", "/pages/list.csv", "/pages/model", "/pages/customers/c1"])
def test_pages_refuse_requests_without_credentials(settings, path) -> None:
    with TestClient(create_app(settings)) as anonymous:
        response = anonymous.get(path)
        wrong_key = anonymous.get(path, headers={"X-API-Key": "not-the-key"})
        forged_cookie = anonymous.get(path, cookies={SESSION_COOKIE: "0" * 64})
    for refused in (response, wrong_key, forged_cookie):
        assert refused.status_code == 401
        assert 'name="api_key"' in refused.text  # the sign-in form, not the data
        assert "churn risk" not in refused.text.lower()


def test_sign_in_sets_an_httponly_strict_cookie_that_opens_the_pages(settings) -> None:
    with TestClient(create_app(settings)) as browser:
        refused = browser.post("/pages/login", data={"api_key": "wrong"}, follow_redirects=False)
        assert refused.status_code == 401 and "API key" in refused.text
        signed_in = browser.post(
            "/pages/login", data={"api_key": PAGES_API_KEY, "next": "/pages/model"}, follow_redirects=False
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/pages/model"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and PAGES_API_KEY not in cookie
        assert browser.get("/pages/list").status_code == 200
        browser.post("/pages/logout")
        assert browser.get("/pages/list").status_code == 401


def test_sign_in_never_redirects_to_another_site(settings) -> None:
    with TestClient(create_app(settings)) as browser:
        for target in ("https://evil.example/", "//evil.example/pages/list", "/pages/../admin"):
            answer = browser.post(
                "/pages/login", data={"api_key": PAGES_API_KEY, "next": target}, follow_redirects=False
            )
            assert answer.headers["location"].startswith("/pages/") and "evil" not in answer.headers["location"]


def test_pages_open_without_a_key_when_none_is_configured(settings) -> None:
    open_settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"api_key": None})})
    with TestClient(create_app(open_settings)) as anonymous:
        assert anonymous.get("/pages/list").status_code == 200


def test_list_shows_the_highest_risk_customers_first(client, stored_list) -> None:
    page = client.get("/pages/list")
    assert page.status_code == 200
    assert shown_customers(page.text) == [row[0] for row in stored_list[:50]]
    assert f"{len(stored_list):,}" in page.text


def test_next_and_previous_pages_continue_the_order(client, stored_list) -> None:
    first = client.get("/pages/list")
    next_link = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = client.get("/pages/list" + next_link)
    assert shown_customers(second.text) == [row[0] for row in stored_list[50:100]]
    previous_link = re.search(r'rel="prev" href="([^"]+)"', second.text).group(1).replace("&amp;", "&")
    assert shown_customers(client.get("/pages/list" + previous_link).text) == [row[0] for row in stored_list[:50]]


def test_band_and_score_filters_keep_only_matching_customers(client, stored_list) -> None:
    page = client.get("/pages/list", params={"band": "medium", "score_max": "0.9"})
    expected = [row[0] for row in stored_list if row[2] == "medium" and row[1] <= 0.9]
    assert shown_customers(page.text) == expected[:50]
    assert f">{len(expected):,}<" in page.text


def test_segment_filter_keeps_only_customers_of_that_segment(client, settings, platform_database_url) -> None:
    page = client.get("/pages/list", params={"segment_plan": "basic"})
    shown = shown_customers(page.text)
    assert shown
    with psycopg2.connect(platform_database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, features ->> 'plan' FROM churnops.online_features WHERE customer_id = ANY(%s)",
            (shown,),
        )
        plans = dict(cur.fetchall())
    assert set(plans.values()) == {"basic"} and len(plans) == len(shown)


def test_money_budget_selects_as_many_customers_as_it_pays_for(client, stored_list) -> None:
    page = client.get("/pages/list", params={"budget_money": "130", "cost_per_contact": "2.5"})
    assert 'id="selected">52<' in page.text
    csv_link = re.search(r'id="export" href="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    rows = list(csv.DictReader(io.StringIO(client.get(csv_link).content.decode("utf-8-sig"))))
    assert [row["customer_id"] for row in rows] == [row[0] for row in stored_list[:52]]
    assert [int(row["rank"]) for row in rows] == list(range(1, 53))


def test_export_of_a_filtered_list_is_the_whole_filtered_list(client, stored_list) -> None:
    answer = client.get("/pages/list.csv", params={"band": "high"})
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert [row["customer_id"] for row in rows] == [row[0] for row in stored_list if row[2] == "high"]


@pytest.fixture(scope="module")
def campaign_order(settings, platform_database_url) -> list[tuple[str, float, int, bool]]:
    """The list by expected saved value, as the database holds it: (customer_id, saved value, rank, in campaign)."""
    with psycopg2.connect(platform_database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id, expected_saved_value, campaign_rank, in_campaign FROM churnops.scores "
            "WHERE dataset = 'synthetic' AND list_kind = 'regular' ORDER BY campaign_rank"
        )
        return cur.fetchall()


def test_a_list_with_value_columns_sorts_by_expected_saved_value_and_pages_on(client, campaign_order) -> None:
    first = client.get("/pages/list", params={"sort": "saved_value"})
    assert first.status_code == 200
    assert "highest expected saved value first" in first.text and "Expected saved value</th>" in first.text
    assert shown_customers(first.text) == [row[0] for row in campaign_order[:50]]
    saved = [row[1] for row in campaign_order]
    assert saved == sorted(saved, reverse=True)
    next_link = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = client.get("/pages/list" + next_link)
    assert shown_customers(second.text) == [row[0] for row in campaign_order[50:100]]
    previous_link = re.search(r'rel="prev" href="([^"]+)"', second.text).group(1).replace("&amp;", "&")
    assert shown_customers(client.get("/pages/list" + previous_link).text) == [row[0] for row in campaign_order[:50]]


def test_a_budget_in_saved_value_order_exports_the_campaigns_top_with_its_value_columns(client, campaign_order) -> None:
    answer = client.get("/pages/list.csv", params={"sort": "saved_value", "budget_count": "30"})
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert [row["customer_id"] for row in rows] == [row[0] for row in campaign_order[:30]]
    assert [int(row["campaign_rank"]) for row in rows] == list(range(1, 31))
    assert [float(row["expected_saved_value"]) for row in rows] == [row[1] for row in campaign_order[:30]]
    assert {row["in_campaign"] for row in rows} <= {"True", "False"}
    assert [row["in_campaign"] == "True" for row in rows] == [row[3] for row in campaign_order[:30]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "alphabetical"}, "sort"),
        ({"score_min": "abc"}, "score_min"),
        ({"score_min": "0.8", "score_max": "0.2"}, "score_min"),
        ({"band": "purple"}, "band"),
        ({"budget_money": "100"}, "cost_per_contact"),
        ({"budget_count": "2.5"}, "budget_count"),
        ({"after": "nonsense"}, "after"),
    ],
)
def test_bad_list_inputs_get_a_page_naming_the_field(client, params, field) -> None:
    page = client.get("/pages/list", params=params)
    assert page.status_code == 422
    assert f"<strong>{field}</strong>" in page.text


def test_customer_page_shows_history_reasons_attributes_and_activity(client, stored_list) -> None:
    customer_id, score, band = stored_list[0]
    page = client.get(f"/pages/customers/{customer_id}")
    assert page.status_code == 200
    assert f"{score:.1%}" in page.text and band in page.text
    reasons = re.findall(r'<li class="(raises|lowers)">([^<]+)</li>', page.text)
    assert reasons and all(" the risk." in text for _, text in reasons)
    assert "Plan" in page.text and "Number of events" in page.text


def test_customer_page_shows_what_the_customer_did_once_a_lists_horizon_passed(
    client, settings, platform_database_url
) -> None:
    # Independent of the realized-outcome code: the feature job's own label of each customer at the backfilled
    # cutoff (the snapshot), against what the page says for that list.
    from churnops.features import CUTOFF
    from churnops.snapshots import latest_snapshot_dir, load_snapshot

    frame, metadata = load_snapshot(latest_snapshot_dir(settings, "synthetic"))
    cutoff = metadata.cutoffs["out_of_time"][0]
    labelled = frame[frame[CUTOFF] == pd.Timestamp(cutoff)].set_index("customer_id")["label"]
    with psycopg2.connect(platform_database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id FROM churnops.scores WHERE dataset = 'synthetic' AND list_kind = 'backfill' "
            "ORDER BY score DESC LIMIT 40"
        )
        listed = [row[0] for row in cur.fetchall()]
    left = next(c for c in listed if labelled[c] == 1)
    stayed = next(c for c in listed if labelled[c] == 0)
    for customer_id, words in ((left, "left"), (stayed, "stayed")):
        page = client.get(f"/pages/customers/{customer_id}")
        rows = re.findall(r"<tr><td>([0-9-]+)</td><td>(regular|backfill)</td>.*?</tr>", page.text, flags=re.S)
        backfill_row = re.search(r"<td>backfill</td>.*?<td class=\"outcome\">([^<]+)</td>", page.text, flags=re.S)
        assert (cutoff, "backfill") in rows and backfill_row is not None
        assert backfill_row.group(1) == words
    # The current list's horizon has not passed: nothing is claimed about it.
    regular_row = re.search(r"<td>regular</td>.*?<td class=\"outcome\">([^<]+)</td>", page.text, flags=re.S)
    assert regular_row is not None and regular_row.group(1) == "not known yet"


def test_unknown_customer_is_a_404_naming_the_field(client) -> None:
    page = client.get("/pages/customers/nobody-here")
    assert page.status_code == 404 and "<strong>customer_id</strong>" in page.text


def test_model_page_shows_the_champion_plots_drift_and_decisions(client, trained_platform) -> None:
    page = client.get("/pages/model")
    assert page.status_code == 200
    assert f"version {trained_platform.model_version} (champion)" in page.text
    plots = re.findall(r'<img src="(/pages/model/plots/[^"]+)"', page.text)
    assert "/pages/model/plots/roc.png" in plots
    image = client.get(plots[0])
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    assert "No drift report yet" not in page.text and "No retraining decision recorded" not in page.text
    assert client.get("/pages/model/plots/..%2Fmodel_card.md").status_code == 404
