"""An entity-level example dataset: a CRM export with one row per customer, a label column and no timestamps.

Many teams can hand over only such a table (attributes, a few usage totals, and whether the customer left). The
`crm_example` contract describes it; `prepare_crm_example` derives it from the seeded synthetic generator so that
the label is real and learnable: usage totals over the 90 days before the export date, and `churned` = no activity
in the 60 days after it. The export keeps no dates, so training can only use a stratified holdout.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from churnops.config import Settings
from churnops.jobs.generate import generate

EXPORT_DATE = dt.date(2024, 7, 1)
HORIZON_DAYS = 60
# With `quirks`: customers this new have a blank spend, as brand-new accounts have blank charges in the Telco CSV.
NEW_CUSTOMER_DAYS = 30


def build_crm_export(n_customers: int = 3_000, seed: int = 21, quirks: bool = False) -> pd.DataFrame:
    """One row per current customer at the export date: attributes, 90-day usage totals and the 0/1 `churned`.

    `quirks` makes it look like a public churn CSV as it comes (the Telco one): `churned` is "Yes"/"No", and the
    spend of customers who signed up less than `NEW_CUSTOMER_DAYS` before the export is a blank " " cell (not billed
    yet), so `spend_90d` reads as text.
    """
    data = generate(n_customers, seed=seed, end=EXPORT_DATE + dt.timedelta(days=HORIZON_DAYS))
    export, events = pd.Timestamp(EXPORT_DATE), data.events
    recent = events[(events["event_time"] < export) & (events["event_time"] >= export - pd.Timedelta(days=90))]
    usage = recent.pivot_table(index="customer_id", columns="event_type", values="amount", aggfunc="size", fill_value=0)
    spend = recent.groupby("customer_id")["amount"].sum()
    after = events[events["event_time"] >= export]["customer_id"].unique()
    # A CRM export lists current accounts: signed up, and active in the quarter before the export.
    current = data.customers["customer_id"].isin(recent["customer_id"]) & (data.customers["signup_date"] < export)
    known = data.customers[current].set_index("customer_id")
    table = pd.DataFrame(
        {
            "account_id": known.index,
            "plan": known["plan"].to_numpy(),
            "region": known["region"].to_numpy(),
            "channel": known["channel"].to_numpy(),
            "age": known["age"].to_numpy(),
            "tenure_days": (export - known["signup_date"]).dt.days.to_numpy(),
            "visits_90d": usage.get("visit", pd.Series(dtype=float)).reindex(known.index, fill_value=0).to_numpy(),
            "support_calls_90d": usage.get("support_call", pd.Series(dtype=float))
            .reindex(known.index, fill_value=0)
            .to_numpy(),
            "spend_90d": spend.reindex(known.index, fill_value=0.0).round(2).to_numpy(),
        }
    )
    table["churned"] = (~table["account_id"].isin(after)).astype(int)
    if quirks:
        table["churned"] = table["churned"].map({1: "Yes", 0: "No"})
        table["spend_90d"] = table["spend_90d"].astype(object).where(table["tenure_days"] >= NEW_CUSTOMER_DAYS, " ")
    return table


def prepare_crm_example(settings: Settings, n_customers: int = 3_000, seed: int = 21) -> Path:
    """Write the CRM export as `<home>/data/crm_example/accounts.csv` (atomically) and return the path."""
    import os

    target = settings.data_dir / "crm_example" / "accounts.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}")
    build_crm_export(n_customers, seed).to_csv(staging, index=False)
    os.replace(staging, target)
    return target
