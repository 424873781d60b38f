"""A user's own file fails fast and plainly: the source check judges it against the contract with pandas, before any
Spark work, and every message names the column and the fix (the contract line or the cells to change).

The feature job is run with a tripwire in place of `churnops.jobs.spark.spark_session`: a test passes only if the check
refuses the file before the job asks for a Spark session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from churnops.dataset import DatasetContract, LabelDefinition, load_contract
from churnops.jobs.source_check import SourceCheckError, check_sources
from tests.features.conftest import make_settings, write_contract

KEYS = [f"a{i}" for i in range(8)]


# An event contract over a landing folder of CSV files (customer, when, value).
SHOP_EVENTS_CONTRACT = {
    "name": "shop",
    "events": {"path": "landing", "format": "csv", "entity_key": "customer", "timestamp": "when", "amount": "value"},
    "label": {"kind": "churn", "horizon_days": 30},
    "cutoffs": {"first": "2024-01-01"},
}


def write_accounts(folder: Path, **columns: list[str]) -> Path:
    """A small CSV entity table (as text, the way a CRM export arrives); `columns` replace or add columns."""
    table = pd.DataFrame(
        {
            "account_id": KEYS,
            "plan": ["basic", "plus", "basic", "plus", "basic", "plus", "basic", "plus"],
            "age": ["34", "51", "27", "45", "38", "62", "29", "41"],
            "spend": ["10.5", "22", "0", "13.25", "8", "40.1", "3", "17"],
            "churned": ["0", "1", "0", "0", "1", "0", "0", "1"],
        }
        | columns
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "accounts.csv"
    table.to_csv(path, index=False)
    return path


def entity_contract(folder: Path, label: dict | None = None, **entities: object) -> DatasetContract:
    raw = {
        "name": "accounts",
        "entities": {
            "path": "accounts.csv",
            "format": "csv",
            "key": "account_id",
            "categorical": ["plan"],
            "numeric": ["age", "spend"],
        }
        | entities,
        "label": {"kind": "column", "column": "churned"} | (label or {}),
    }
    return write_contract(folder, raw)


@pytest.fixture
def spark_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the feature job asked for a Spark session before the source check refused the file")

    monkeypatch.setattr("churnops.jobs.spark.spark_session", refuse)


def refused_by_feature_job(contract: DatasetContract, folder: Path) -> SourceCheckError:
    from churnops.jobs.features import run_feature_job

    with pytest.raises(SourceCheckError) as refused:
        run_feature_job(contract, make_settings(folder / "home"))
    return refused.value


def test_a_missing_column_fails_before_spark_naming_the_contract_line_and_the_close_match(
    tmp_path, spark_must_not_start
):
    write_accounts(tmp_path)
    contract = entity_contract(tmp_path, numeric=["age", "spnd"])

    error = refused_by_feature_job(contract, tmp_path)

    [finding] = error.report.errors
    assert finding.column == "spnd"
    assert "no column 'spnd' (named by `entities.numeric`); did you mean 'spend'?" in finding.problem
    assert finding.fix == "write 'spend' instead of 'spnd' in `entities.numeric`"
    assert "column 'spnd'" in str(error) and "Fix: write 'spend'" in str(error)


def test_an_unparseable_number_fails_with_its_count_and_three_examples(tmp_path, spark_must_not_start):
    write_accounts(tmp_path, age=["34", "n/a", "27", "forty", "38", "62", "1,5", "?"])

    error = refused_by_feature_job(entity_contract(tmp_path), tmp_path)

    [finding] = error.report.errors
    assert finding.column == "age"
    assert finding.problem == "4 of 8 values do not parse as a number, e.g. 'n/a', 'forty', '1,5'"
    assert "move 'age' from `entities.numeric` to `entities.categorical`" in finding.fix
    assert "column 'age'" in str(error)


def test_a_label_that_is_not_0_or_1_fails_suggesting_the_positive_value(tmp_path, spark_must_not_start):
    write_accounts(tmp_path, churned=["No", "Yes", "No", "No", "Yes", "No", "No", "No"])

    error = refused_by_feature_job(entity_contract(tmp_path), tmp_path)

    [finding] = error.report.errors
    assert finding.column == "churned"
    assert finding.problem == "8 label value(s) are not 0 or 1: 'No' (6 rows), 'Yes' (2 rows)"
    assert 'declare the value that means 1 under `label`, e.g. positive: "Yes"' in finding.fix


def test_a_label_value_that_is_neither_declared_class_fails(tmp_path, spark_must_not_start):
    write_accounts(tmp_path, churned=["No", "Yes", "No", "Maybe", "Yes", "No", "No", "Maybe"])
    contract = entity_contract(tmp_path, label={"positive": "Yes", "negative": "No"})

    error = refused_by_feature_job(contract, tmp_path)

    [finding] = error.report.errors
    assert finding.column == "churned"
    assert "neither the positive 'Yes' nor the negative 'No': 'Maybe' (2 rows)" in finding.problem
    assert "remove `label.negative`" in finding.fix


def test_a_duplicate_key_fails_naming_the_repeated_keys(tmp_path, spark_must_not_start):
    write_accounts(tmp_path, account_id=["a0", "a1", "a2", "a1", "a4", "a0", "a6", "a1"])

    error = refused_by_feature_job(entity_contract(tmp_path), tmp_path)

    [finding] = error.report.errors
    assert finding.column == "account_id"
    assert finding.problem == "2 key(s) appear on more than one row (5 rows), e.g. 'a0', 'a1'"
    assert "one row per customer" in finding.fix and "`entities.key`" in finding.fix


@pytest.mark.parametrize("content", ["", "account_id,plan,age,spend,churned\n"], ids=["zero-bytes", "header-only"])
def test_an_empty_file_fails_naming_the_file_and_the_fix(tmp_path, spark_must_not_start, content):
    contract = entity_contract(tmp_path)
    (tmp_path / "accounts.csv").write_text(content)

    error = refused_by_feature_job(contract, tmp_path)

    [finding] = error.report.errors
    assert finding.problem == f"{tmp_path / 'accounts.csv'} has no rows (an empty or header-only file)"
    assert "export the file again with its rows, or point `entities.path` at the right file" == finding.fix


def test_one_error_lists_every_problem(tmp_path, spark_must_not_start):
    write_accounts(tmp_path, account_id=["a0", "a0", *KEYS[2:]], age=["x", *["30"] * 7], churned=["2", *["0"] * 7])
    contract = entity_contract(tmp_path, categorical=["plan", "region"])

    message = str(refused_by_feature_job(contract, tmp_path))

    assert message.startswith("dataset 'accounts': 4 problem(s) in the source files")
    for column in ("region", "account_id", "age", "churned"):
        assert f"- entities column {column!r}: " in message


def test_positive_label_maps_its_value_to_1_and_every_other_value_to_0():
    label = LabelDefinition(kind="column", column="churned", positive="Yes")
    assert [label.class_of(v) for v in ["Yes", " Yes ", "No", "no", "whatever", "  "]] == [1, 1, 0, 0, 0, None]
    strict = LabelDefinition(kind="column", column="churned", positive="Yes", negative="No")
    assert [strict.class_of(v) for v in ["Yes", "No"]] == [1, 0]
    with pytest.raises(ValueError, match="neither the positive 'Yes' nor the negative 'No'"):
        strict.class_of("no")
    default = LabelDefinition(kind="column", column="churned")
    assert [default.class_of(v) for v in ["0", "1", "1.0", ""]] == [0, 1, 1, None]


def test_blank_numeric_cells_are_missing_values_counted_in_the_report(tmp_path):
    write_accounts(tmp_path, spend=["10.5", " ", "", "13.25", "8", "   ", "3", "17"])

    report = check_sources(entity_contract(tmp_path))

    assert report.errors == []
    assert ("spend", "3 blank cell(s) read as missing values") in [(f.column, f.problem) for f in report.notes]


def test_spark_reads_the_positive_label_as_1_and_blank_numbers_as_missing(tmp_path, spark):
    from churnops.jobs.feature_frames import read_entities

    write_accounts(
        tmp_path,
        spend=["10.5", " ", "", "13.25", "8", "   ", "3", "17"],
        churned=["No", "Yes", "No", "No", "Yes", "No", " ", "Yes"],
    )
    contract = entity_contract(tmp_path, label={"positive": "Yes"})

    rows = read_entities(spark, contract).toPandas().set_index("customer_id")

    assert rows["label"].isna().tolist() == [False] * 6 + [True, False]  # a blank label: a row only to score
    assert rows["label"].dropna().tolist() == [0, 1, 0, 0, 1, 0, 1]
    assert rows["spend"].isna().tolist() == [False, True, True, False, False, True, False, False]
    assert rows.loc["a3", "spend"] == 13.25


def test_blank_categorical_cells_are_missing_values_counted_in_the_report(tmp_path):
    write_accounts(tmp_path, plan=["basic", " ", "", "plus", "basic", "   ", "basic", "plus"])

    report = check_sources(entity_contract(tmp_path))

    assert report.errors == []
    assert ("plan", "3 blank cell(s) read as missing values") in [(f.column, f.problem) for f in report.notes]


def test_spark_reads_blank_categorical_cells_as_missing_not_as_a_category(tmp_path, spark):
    """A " " cell would otherwise become a category of its own, learned by the model and absent from the API's
    records (which send null or "" for the same blank)."""
    from churnops.jobs.feature_frames import read_entities

    write_accounts(tmp_path, plan=["basic", " ", "", "plus", " basic", "   ", "basic", "plus"])

    rows = read_entities(spark, entity_contract(tmp_path)).toPandas().set_index("customer_id")

    assert rows["plan"].isna().tolist() == [False, True, True, False, False, True, False, False]
    assert rows.loc["a4", "plan"] == " basic", "a value that is not blank is kept as written, as the API reads it"


def test_event_files_are_checked_for_structure_not_row_by_row(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    pd.DataFrame({"customer": ["c1", "c2"], "when": ["yesterday", "last week"], "value": ["5", "oops"]}).to_csv(
        landing / "2024-05-01.csv", index=False
    )
    pd.DataFrame(
        {"customer": ["c1", "c2"], "when": ["2024-05-02T10:00:00", "not a time"], "value": ["5", "oops"]}
    ).to_csv(landing / "2024-05-02.csv", index=False)
    (landing / "2024-05-03.csv").write_text("customer,when,value\n")
    raw = SHOP_EVENTS_CONTRACT

    report = check_sources(write_contract(tmp_path, raw))

    # A bad row among good ones is ingestion's to quarantine; a column with no time at all is a contract mistake.
    assert [(f.source, f.column) for f in report.errors] == [
        ("events 2024-05-01.csv", "when"),
        ("events 2024-05-03.csv", None),
    ]
    timestamp, empty = report.errors
    assert "not one of the first 2 values parses as a time, e.g. 'yesterday', 'last week'" == timestamp.problem
    assert "`events.timestamp` must name a column of ISO 8601 times" in timestamp.fix
    assert "has no rows" in empty.problem


def test_the_check_command_prints_a_table_and_exits_1_until_the_file_fits(tmp_path):
    from churnops.cli import app

    write_accounts(tmp_path, churned=["No", "Yes", "No", "No", "Yes", "No", "No", "No"])
    entity_contract(tmp_path)
    contract_path = str(tmp_path / "accounts.yaml")
    env = {"CHURNOPS_HOME": str(tmp_path / "home"), "COLUMNS": "200"}

    broken = CliRunner().invoke(app, ["check", "--dataset", contract_path], env=env)
    assert broken.exit_code == 1
    assert "churned" in broken.output and 'positive: "Yes"' in broken.output
    assert "1 error(s) in dataset 'accounts'" in broken.output

    raw = yaml.safe_load(Path(contract_path).read_text())
    raw["label"]["positive"] = "Yes"
    Path(contract_path).write_text(yaml.safe_dump(raw))
    fixed = CliRunner().invoke(app, ["check", "--dataset", contract_path], env=env)
    assert fixed.exit_code == 0, fixed.output
    assert "2 positive of 8 labels" in fixed.output
    assert "the sources fit the contract" in fixed.output


def test_the_features_command_stops_at_the_check_with_the_same_table(tmp_path, spark_must_not_start):
    from churnops.cli import app

    write_accounts(tmp_path, age=["34", "n/a", *["30"] * 6])
    entity_contract(tmp_path)

    result = CliRunner().invoke(
        app, ["features", "--dataset", str(tmp_path / "accounts.yaml")], env={"CHURNOPS_HOME": str(tmp_path / "h")}
    )

    assert result.exit_code == 1
    assert "age" in result.output and "'n/a'" in result.output


def test_entity_level_training_runs_the_check_before_reading_a_snapshot(tmp_path):
    from churnops.jobs.training import train

    write_accounts(tmp_path, account_id=["a0", "a0", *KEYS[2:]])

    # No snapshot exists either: the refusal must be the source check's, which comes first.
    with pytest.raises(SourceCheckError, match="column 'account_id': 1 key"):
        train(make_settings(tmp_path / "home"), entity_contract(tmp_path))


def test_the_source_check_runs_without_spark(tmp_path):
    write_accounts(tmp_path, age=["x", *["30"] * 7])
    entity_contract(tmp_path)
    script = (
        "import sys; from churnops.config import Settings; from churnops.dataset import load_contract; "
        "from churnops.jobs.source_check import check_sources; "
        f"report = check_sources(load_contract({str(tmp_path / 'accounts.yaml')!r}, Settings())); "
        "print(len(report.errors), 'pyspark' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["1", "False"]


def test_an_unquoted_yes_in_the_contract_is_refused_with_the_quoting_fix(tmp_path):
    write_accounts(tmp_path)
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "name: accounts\nentities: {path: accounts.csv, format: csv, key: account_id}\n"
        "label: {kind: column, column: churned, positive: Yes}\n"
    )
    with pytest.raises(ValueError, match='write it as in the file, e.g. positive: "Yes"'):
        load_contract(str(path), make_settings(tmp_path))


def test_an_entity_level_contract_needs_no_date(tmp_path):
    from churnops.jobs.features import prepare_run

    write_accounts(tmp_path)
    contract = entity_contract(tmp_path)

    prepared = prepare_run(contract, make_settings(tmp_path / "home"))

    assert contract.cutoffs.first is None and contract.cutoffs.as_of is None
    assert prepared.plan.train == (prepared.run_date,) == (prepared.plan.scoring,)


def test_a_typed_parquet_table_passes_as_it_is(tmp_path):
    pd.DataFrame(
        {
            "account_id": KEYS,
            "plan": ["basic", "plus"] * 4,
            "age": [34, 51, None, 45, 38, 62, 29, 41],
            "spend": [10.5, 22.0, 0.0, 13.25, 8.0, 40.1, 3.0, 17.0],
            "signup": pd.to_datetime(["2024-01-0" + str(i + 1) for i in range(8)]).date,
            "churned": [False, True, False, False, True, False, False, True],
        }
    ).to_parquet(tmp_path / "accounts.parquet")
    contract = entity_contract(tmp_path, path="accounts.parquet", format="parquet", signup="signup")

    report = check_sources(contract)

    assert report.errors == []
    assert ("age", "1 blank cell(s) read as missing values") in [(f.column, f.problem) for f in report.notes]
    assert ("churned", "3 positive of 8 labels; '0' (5 rows), '1' (3 rows)") in [
        (f.column, f.problem) for f in report.notes
    ]


def test_a_file_of_customers_to_score_needs_no_label_column(tmp_path):
    write_accounts(tmp_path)
    pd.read_csv(tmp_path / "accounts.csv").drop(columns="churned").to_csv(tmp_path / "accounts.csv", index=False)
    contract = entity_contract(tmp_path)

    assert check_sources(contract, with_label=False).errors == []
    [missing] = check_sources(contract).errors
    assert missing.column == "churned" and "(named by `label.column`)" in missing.problem


def test_the_feature_job_checks_only_the_event_files_not_yet_ingested(tmp_path):
    from churnops.jobs.ingest import ensure_bronze
    from churnops.jobs.source_check import event_files_not_yet_ingested

    landing = tmp_path / "landing"
    landing.mkdir()
    pd.DataFrame({"customer": ["c1", "c2"], "when": ["2024-05-01T10:00:00"] * 2, "value": ["5", "7"]}).to_csv(
        landing / "2024-05-01.csv", index=False
    )
    raw = SHOP_EVENTS_CONTRACT
    contract, settings = write_contract(tmp_path, raw), make_settings(tmp_path / "home")
    ensure_bronze(contract, settings)
    (landing / "2024-05-02.csv").write_text("customer,when,value\n")

    assert [f.relative for f in event_files_not_yet_ingested(contract, settings)] == ["2024-05-02.csv"]
