"""Scoring a new file with the champion (`churnops score --input`): the same features and scores as the API gives
for the same customers, nothing of the dataset's own state touched, and a file the contract does not fit refused
by name before Spark starts."""

from __future__ import annotations

import math
import shutil
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg2
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from churnops import db
from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.score import score
from churnops.jobs.score_input import InputFileError, check_input, input_identity, score_input
from churnops.serving.app import create_app
from churnops.snapshots import latest_snapshot_dir, load_snapshot
from churnops.survival_columns import survival_list_columns
from churnops.value_contract import VALUE_LIST_COLUMNS
from tests.pipeline.test_score_spark import assert_same_model_columns
from tests.serving.conftest import platform_database_url  # noqa: F401 - fixture re-exported

CUSTOMERS_IN_FILE = 40


def _plain(value: Any) -> Any:
    """A JSON value as a CSV-fed client would send it: numpy unwrapped, NaN as null; never rounded."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


@pytest.fixture(scope="module")
def scoring_rows(trained_platform) -> pd.DataFrame:
    """The snapshot's rows at its scoring cutoff: the features the feature job computed for every customer."""
    frame, metadata = load_snapshot(latest_snapshot_dir(trained_platform.settings, "synthetic"))
    return frame[frame[CUTOFF] == pd.Timestamp(metadata.cutoffs["scoring"][0])]


@pytest.fixture(scope="module")
def new_events_csv(trained_platform, scoring_rows, tmp_path_factory) -> Path:
    """Every event of 40 scored customers as a CSV export (text, as a user's file comes), one of them active on
    the last day of data so that the file's cutoff is the snapshot's scoring cutoff."""
    contract = trained_platform.contract
    events = pd.read_parquet(contract.resolve(contract.events.path))
    last_day = events["event_time"].dt.normalize().max()
    scored = set(scoring_rows[ENTITY_ID].astype(str))
    active_last_day = sorted(set(events.loc[events["event_time"] >= last_day, "customer_id"].astype(str)) & scored)
    others = sorted(scored - {active_last_day[0]})
    chosen = {active_last_day[0], *others[: CUSTOMERS_IN_FILE - 1]}
    path = tmp_path_factory.mktemp("new-file") / "new_customers.csv"
    events[events["customer_id"].astype(str).isin(chosen)].to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_a_new_file_gets_exactly_the_scores_the_api_gives_for_the_same_customers(
    trained_platform, scoring_rows, new_events_csv, tmp_path
) -> None:
    settings = trained_platform.settings
    run = score_input(settings, trained_platform.contract, new_events_csv, tmp_path / "scores.csv")

    # round_trip: pandas' default CSV float parser may be off by one unit in the last place.
    listed = pd.read_csv(
        run.output_path, dtype={"customer_id": str, "model_version": str}, float_precision="round_trip"
    )
    assert run.rows_scored == len(listed) == CUSTOMERS_IN_FILE
    assert run.cutoff == pd.Timestamp(scoring_rows[CUTOFF].iloc[0]).date()
    assert list(listed.columns) == [
        "customer_id",
        "probability",
        "decision",
        "risk_band",
        "model_version",
        "model_name",
        "cutoff",
        # The synthetic contract's value and survival models, from the file's own purchases and rows.
        *VALUE_LIST_COLUMNS,
        *survival_list_columns(trained_platform.contract.survival.horizons),
    ]
    assert (listed["model_version"] == trained_platform.model_version).all()

    # The same customers' features as the feature job computed them from the whole dataset, sent to the API.
    rows = scoring_rows[scoring_rows[ENTITY_ID].astype(str).isin(set(listed["customer_id"]))]
    with TestClient(create_app(settings)) as client:
        model = client.get("/model").json()
        columns = model["feature_schema"]["columns"]
        instances = [
            {"customer_id": str(row[ENTITY_ID]), "features": {name: _plain(row[name]) for name in columns}}
            for _, row in rows.iterrows()
        ]
        response = client.post("/batch_predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    from_api = pd.DataFrame(response.json()["predictions"]).set_index("customer_id")
    from_file = listed.set_index("customer_id").loc[from_api.index]
    assert from_file["probability"].tolist() == from_api["probability"].tolist()  # exactly, not approximately
    assert from_file["decision"].tolist() == from_api["decision"].tolist()
    assert from_file["risk_band"].tolist() == from_api["risk_band"].tolist()


@pytest.mark.slow
def test_a_file_of_every_event_gets_the_value_and_survival_columns_of_the_snapshots_list(
    trained_platform, tmp_path: Path
) -> None:
    """Same customers, same purchases: the file's list has the scheduled list's expected value, campaign and
    survival columns (the same functions; ranks alike up to the order of exact ties). The lists are compared as
    Parquet: no database, so the session's shared one never holds this test's scheduled list."""
    home = tmp_path / "home"
    shutil.copytree(trained_platform.settings.home, home)
    original = trained_platform.settings
    settings = Settings(home=home, training=original.training, spark=original.spark, database_url=None)
    contract = load_contract("synthetic", settings)
    every_event = tmp_path / "every_event.parquet"
    shutil.copyfile(contract.resolve(contract.events.path), every_event)

    scheduled = pd.read_parquet(score(settings, contract, run_id="scheduled", engine="pandas").path)
    run = score_input(settings, contract, every_event, tmp_path / "file_list.parquet")
    from_file = pd.read_parquet(run.output_path)

    assert run.cutoff == pd.Timestamp(scheduled["cutoff"].iloc[0]).date()
    joined = scheduled.merge(
        from_file, on=ENTITY_ID, how="outer", suffixes=("_pandas", "_spark"), indicator=True, validate="one_to_one"
    )
    assert (joined["_merge"] == "both").all() and len(joined) == len(scheduled)
    by_rank = joined.drop(columns=["campaign_rank_pandas", "campaign_rank_spark"])
    assert_same_model_columns(by_rank)  # every column but the rank: numbers within 1e-12, flags equal
    # The campaign rank follows the list's order among exactly equal saved values: per group of equal saved values,
    # the same ranks.
    for _, group in joined.groupby("expected_saved_value_pandas"):
        assert sorted(group["campaign_rank_pandas"]) == sorted(group["campaign_rank_spark"])
    assert (joined["in_campaign_pandas"] == joined["in_campaign_spark"]).all()


def _files_under(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file() and skip not in path.parents
    }


@pytest.mark.slow
def test_scoring_a_file_writes_an_adhoc_list_and_leaves_the_datasets_state_alone(
    trained_platform,
    new_events_csv,
    platform_database_url,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained_platform.settings.home, home)
    original = trained_platform.settings
    settings = Settings(
        home=home, training=original.training, spark=original.spark, database_url=SecretStr(platform_database_url)
    )
    contract = load_contract("synthetic", settings)
    before = _files_under(home, skip=settings.mlflow_dir)

    run = score_input(settings, contract, new_events_csv, tmp_path / "scores.parquet")

    # Snapshots, `latest` pointers, bronze, drift references and scheduled lists: not one file added or changed.
    assert _files_under(home, skip=settings.mlflow_dir) == before
    assert len(pd.read_parquet(run.output_path)) == run.rows_scored == run.rows_in_database == CUSTOMERS_IN_FILE
    # A second file of the same day gets a list of its own; scoring the first file again replaces only its list.
    other_file = tmp_path / "other_customers.csv"
    events = pd.read_csv(new_events_csv, dtype=str)
    active_last = events.loc[events["event_time"] == events["event_time"].max(), "customer_id"].iloc[0]
    five = {active_last, *sorted(set(events["customer_id"]) - {active_last})[:4]}  # the same last day: same cutoff
    events[events["customer_id"].isin(five)].to_csv(other_file, index=False)
    other = score_input(settings, contract, other_file, tmp_path / "other.parquet")
    again = score_input(settings, contract, new_events_csv, tmp_path / "scores.parquet")
    assert run.cutoff == other.cutoff == again.cutoff
    first, second = input_identity(new_events_csv), input_identity(other_file)
    assert first.startswith("new_customers.csv@") and second.startswith("other_customers.csv@")
    with closing(psycopg2.connect(platform_database_url)) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT list_kind, list_name, run_id, row_count FROM churnops.score_runs "
                "WHERE dataset = 'synthetic' ORDER BY list_name"
            )
            assert cur.fetchall() == [
                ("adhoc", first, f"adhoc:{first}", CUSTOMERS_IN_FILE),
                ("adhoc", second, f"adhoc:{second}", other.rows_scored),
            ]
        # The campaign export reads the scheduled list only: an ad-hoc file is never sent as a campaign.
        assert db.latest_scores(conn, "synthetic").empty


def test_a_files_list_is_named_by_its_name_and_content_so_only_the_same_file_replaces_it(tmp_path: Path) -> None:
    first, edited = tmp_path / "first" / "export.csv", tmp_path / "second" / "export.csv"
    for path, text in ((first, "customer_id\n1\n"), (edited, "customer_id\n2\n")):
        path.parent.mkdir()
        path.write_text(text)

    assert input_identity(first) == input_identity(first) == input_identity(first.parent / "." / "export.csv")
    assert input_identity(first) != input_identity(edited), "two exports of the same name are two lists"
    assert input_identity(first).startswith("export.csv@")


@pytest.fixture
def small_events_csv(tmp_path: Path) -> Path:
    """Three events in the synthetic contract's shape."""
    path = tmp_path / "events.csv"
    pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2"],
            "event_time": ["2024-01-02 10:00:00", "2024-01-05 09:30:00", "2024-01-04 18:00:00"],
            "event_type": ["visit", "purchase", "visit"],
            "amount": ["0", "19.99", "0"],
        }
    ).to_csv(path, index=False)
    return path


def test_a_file_missing_a_column_is_refused_by_name_before_spark_or_mlflow(small_events_csv, tmp_path) -> None:
    # A fresh home has no model at all: had anything looked for one (or started Spark) first, the error would be
    # another.
    settings = Settings(home=tmp_path / "empty-home")
    without_amount = tmp_path / "no_amount.csv"
    pd.read_csv(small_events_csv).drop(columns=["amount"]).to_csv(without_amount, index=False)

    with pytest.raises(InputFileError, match=r"lacks column\(s\) 'amount' \(contract field `events.amount`\)"):
        score_input(settings, load_contract("synthetic", settings), without_amount)
    assert not (tmp_path / "no_amount.scores.csv").exists()


def test_an_entities_file_for_an_event_log_is_checked_by_name_too(small_events_csv, tmp_path) -> None:
    settings = Settings(home=tmp_path / "empty-home")
    attributes = tmp_path / "new_customers.csv"
    pd.DataFrame({"customer_id": ["c1"], "signup_date": ["2023-01-01"], "plan": ["basic"]}).to_csv(attributes)
    with pytest.raises(InputFileError, match=r"entities .*new_customers.csv lacks column\(s\) 'region' .* 'age' "):
        score_input(settings, load_contract("synthetic", settings), small_events_csv, entities_path=attributes)


def test_an_entity_table_needs_its_attributes_but_not_its_label(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    contract = load_contract("crm_example", settings)
    table = pd.DataFrame(
        {
            "account_id": ["a1", "a2"],
            "plan": ["basic", "pro"],
            "region": ["north", "south"],
            "channel": ["web", "store"],
            "age": [31, 45],
            "tenure_days": [100, 800],
            "visits_90d": [3, 0],
            "spend_90d": [12.5, 0.0],
        }
    )
    complete = tmp_path / "accounts.csv"
    table.assign(support_calls_90d=[0, 2]).to_csv(complete, index=False)
    assert check_input(contract, complete) == "csv"  # no `churned` column, and that is fine

    incomplete = tmp_path / "accounts.parquet"
    table.to_parquet(incomplete)
    with pytest.raises(InputFileError, match=r"'support_calls_90d' \(contract field `entities.numeric`\)"):
        check_input(contract, incomplete)


@pytest.mark.slow  # MLflow creates its store
def test_a_dataset_without_a_champion_is_refused_with_the_command_to_make_one(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    contract = load_contract("crm_example", settings)
    table = tmp_path / "accounts.csv"
    columns = ["account_id", "plan", "region", "channel", "age", "tenure_days", "visits_90d"]
    pd.DataFrame([["a1", "basic", "north", "web", 30, 10, 1]], columns=columns).assign(
        support_calls_90d=0, spend_90d=1.0
    ).to_csv(table, index=False)
    with pytest.raises(InputFileError, match="has no champion model .* run `churnops train --dataset crm_example`"):
        score_input(settings, contract, table)


@pytest.mark.parametrize(
    ("input_name", "output_name", "message"),
    [
        ("events.xlsx", None, r"unknown format '\.xlsx'; use a \.csv or \.parquet file"),
        ("events.csv", "scores.json", r"output .*scores\.json: unknown format '\.json'"),
        ("events.csv", "events.csv", "is the input file"),
    ],
    ids=["input-format", "output-format", "output-is-input"],
)
def test_unusable_file_names_are_refused_before_any_work(
    small_events_csv, tmp_path: Path, input_name, output_name, message
) -> None:
    settings = Settings(home=tmp_path / "empty-home")
    source = tmp_path / input_name
    if source != small_events_csv:
        shutil.copy(small_events_csv, source)
    output = tmp_path / output_name if output_name else None
    with pytest.raises(InputFileError, match=message):
        score_input(settings, load_contract("synthetic", settings), source, output)


@pytest.fixture(scope="module")
def crm_champion(tmp_path_factory) -> Settings:
    """The entity-level example (a CRM export, a `churned` column, no dates) with a trained champion."""
    from churnops.jobs.crm_example import prepare_crm_example
    from churnops.jobs.features import run_feature_job
    from churnops.jobs.training import train

    settings = Settings(
        home=tmp_path_factory.mktemp("crm-home"), training={"n_trials": 3, "seed": 3}, spark={"master": "local[2]"}
    )
    contract = load_contract("crm_example", settings)
    prepare_crm_example(settings, n_customers=1_500)
    run_feature_job(contract, settings)
    assert train(settings, contract).decision.promoted
    return settings


@pytest.mark.slow
def test_a_new_entity_table_read_as_text_scores_like_the_same_rows_sent_to_the_api(crm_champion, tmp_path) -> None:
    import csv

    from churnops.jobs.crm_example import build_crm_export

    contract = load_contract("crm_example", crm_champion)
    new_accounts = tmp_path / "new_accounts.csv"
    table = build_crm_export(n_customers=300, seed=99).drop(columns=["churned"])
    table.loc[table.index[:3], "spend_90d"] = None  # blank cells, as exports have them
    table.to_csv(new_accounts, index=False)

    run = score_input(crm_champion, contract, new_accounts)

    assert run.output_path == tmp_path / "new_accounts.scores.csv"
    listed = pd.read_csv(run.output_path, dtype={"customer_id": str}, float_precision="round_trip")
    assert run.rows_scored == len(listed) == len(table)
    # The same file read as a CSV client reads it (every value text, blanks as ""), sent to the API as it is.
    with new_accounts.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    instances = [{"customer_id": row.pop("account_id"), "features": row} for row in rows]
    with TestClient(create_app(crm_champion.model_copy(update={"dataset": "crm_example"}))) as client:
        response = client.post("/batch_predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    from_api = pd.DataFrame(response.json()["predictions"]).set_index("customer_id")
    from_file = listed.set_index("customer_id").loc[from_api.index]
    assert from_file["probability"].tolist() == from_api["probability"].tolist()
    assert from_file["risk_band"].tolist() == from_api["risk_band"].tolist()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "{events}", "--cutoff", "2024-01-01"], "leave out --run-date and --cutoff"),
        (["--output", "scores.csv"], "--output and --entities go with --input FILE"),
        (["--input", "{no_amount}"], "lacks column(s) 'amount'"),
    ],
    ids=["input-with-cutoff", "output-without-input", "missing-column"],
)
def test_the_score_command_refuses_misused_options_naming_them(small_events_csv, tmp_path, arguments, message) -> None:
    from typer.testing import CliRunner

    from churnops.cli import app

    no_amount = tmp_path / "no_amount.csv"
    pd.read_csv(small_events_csv).drop(columns=["amount"]).to_csv(no_amount, index=False)
    filled = [a.format(events=small_events_csv, no_amount=no_amount) for a in arguments]
    result = CliRunner().invoke(
        app, ["score", "--dataset", "synthetic", *filled], env={"CHURNOPS_HOME": str(tmp_path / "home")}
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())
