"""What the pages read from the platform database (churnops schema): the current list, a customer's history and
published attributes, and the model's monitoring records. Read-only; every query is bounded by the API's
statement timeout except the CSV download, which streams through a server-side cursor on its own connection."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from psycopg2 import sql

from churnops import db
from churnops.config import Settings
from churnops.serving.online import _ConnectionPool  # the API's bounded pool of autocommit connections, shared code
from churnops.serving.pages.list_query import Cursor, ListFilters, filtered_list_sql
from churnops.serving.prediction_log import bounded_database_settings
from churnops.spreadsheet_safety import formula_safe_csv_text

LIST_COLUMNS = ("customer_id", "score", "risk_band", "risk_decile", "decision", "model_version", "cutoff")
# Shown, sorted by and exported when the list has them (a dataset with a value model).
VALUE_COLUMNS = ("expected_value", "expected_saved_value", "campaign_rank", "in_campaign")
_EXPORT_CHUNK_ROWS = 20_000


class StoreUnavailable(RuntimeError):
    """No platform database is configured, or it cannot be read."""


@dataclass(frozen=True)
class CurrentList:
    logical_date: dt.date
    model_version: str
    row_count: int
    written_at: dt.datetime
    # The list has the value model's columns (expected value, expected saved value, campaign rank, in campaign).
    has_value: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return (*LIST_COLUMNS, *VALUE_COLUMNS) if self.has_value else LIST_COLUMNS


class PageStore:
    def __init__(self, settings: Settings, dataset: str) -> None:
        self.dataset = dataset
        self._settings = settings
        self._pool = _ConnectionPool(bounded_database_settings(settings)) if settings.database_url else None

    def _execute(self, query: str | sql.Composable, args: Sequence[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        if self._pool is None:
            raise StoreUnavailable("no platform database is configured (CHURNOPS_DATABASE_URL)")
        try:
            conn = self._pool.get()
        except Exception as error:
            raise StoreUnavailable(f"the platform database cannot be reached: {type(error).__name__}") from error
        try:
            with conn.cursor() as cur:
                # JIT compiling costs more than these index walks save (0.46 s measured on a segment count).
                cur.execute("SET jit = off")
                cur.execute(query, list(args))
                names = [column.name for column in cur.description]
                rows = cur.fetchall()
        except Exception as error:
            self._pool.discard(conn)
            raise StoreUnavailable(f"the platform database cannot be read: {type(error).__name__}") from error
        self._pool.put(conn)
        return names, rows

    def _rows(self, query: str | sql.Composable, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._execute(query, args)[1]

    def _records(self, query: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        names, rows = self._execute(query, args)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    # The list ------------------------------------------------------------------------------------------------

    def current_list(self) -> CurrentList | None:
        rows = self._rows(
            """
            SELECT r.logical_date, r.model_version, r.row_count, r.written_at,
                   -- A list has its value columns whole or not at all: its top row tells (the score index).
                   coalesce((SELECT s.in_campaign IS NOT NULL FROM churnops.scores s
                             WHERE s.dataset = r.dataset AND s.logical_date = r.logical_date
                               AND s.list_kind = 'regular' ORDER BY s.score DESC LIMIT 1), false)
            FROM churnops.score_runs r
            WHERE r.dataset = %s AND r.list_kind = 'regular' ORDER BY r.logical_date DESC LIMIT 1
            """,
            (self.dataset,),
        )
        return CurrentList(*rows[0]) if rows else None

    def list_page(
        self,
        current: CurrentList,
        filters: ListFilters,
        *,
        rows: int,
        after: Cursor | None = None,
        before: Cursor | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `rows` rows of the filtered list in page order, without their segment attributes."""
        query, args = filtered_list_sql(
            self.dataset, current.logical_date, filters, after=after, before=before, value_columns=current.has_value
        )
        found = self._rows(sql.SQL("{} LIMIT %s").format(query), [*args, rows])
        if before is not None:
            found.reverse()
        return [dict(zip(current.columns, row, strict=True)) for row in found]

    def with_segments(self, rows: list[dict[str, Any]], segment_columns: Sequence[str]) -> list[dict[str, Any]]:
        if not rows or not segment_columns:
            return rows
        keys = sql.SQL(", ").join(sql.SQL("features ->> {}").format(sql.Literal(c)) for c in segment_columns)
        found = self._rows(
            sql.SQL(
                "SELECT customer_id, {} FROM churnops.online_features WHERE dataset = %s AND customer_id = ANY(%s)"
            ).format(keys),
            (self.dataset, [row["customer_id"] for row in rows]),
        )
        attributes = {row[0]: row[1:] for row in found}
        for row in rows:
            values = attributes.get(row["customer_id"], (None,) * len(segment_columns))
            row.update(zip(segment_columns, values, strict=True))
        return rows

    def count_matches(self, current: CurrentList, filters: ListFilters) -> int:
        """Matching customers, counted up to `filters.count_cap` + 1 (more means "over the cap")."""
        if filters == ListFilters():
            return current.row_count
        query, args = filtered_list_sql(self.dataset, current.logical_date, filters, for_count=True)
        capped = sql.SQL("SELECT count(*) FROM ({} LIMIT %s) matches").format(query)
        return int(self._rows(capped, [*args, filters.count_cap + 1])[0][0])

    def export_csv(
        self, current: CurrentList, filters: ListFilters, segment_columns: Sequence[str], limit: int | None
    ) -> Iterator[str]:
        """The filtered list (its first `limit` rows) as formula-safe CSV text, streamed in chunks."""
        query, args = filtered_list_sql(self.dataset, current.logical_date, filters, value_columns=current.has_value)
        if limit is not None:
            query, args = sql.SQL("{} LIMIT %s").format(query), [*args, limit]
        names = ["rank", *current.columns, *segment_columns]
        with contextlib.closing(db.connect(self._settings, application_name="churnops-pages-export")) as conn:
            # A named cursor fetches chunk by chunk on the server: a million-row download never sits in memory.
            with conn, conn.cursor(name="pages_export") as cur:
                cur.itersize = _EXPORT_CHUNK_ROWS
                cur.execute(query, args)
                rank = 1
                header = True
                while chunk := cur.fetchmany(_EXPORT_CHUNK_ROWS):
                    rows = self.with_segments(
                        [dict(zip(current.columns, row, strict=True)) for row in chunk], segment_columns
                    )
                    frame = pd.DataFrame(rows, columns=names[1:])
                    frame.insert(0, "rank", range(rank, rank + len(frame)))
                    yield formula_safe_csv_text(frame, header=header)
                    rank += len(chunk)
                    header = False
                if header:
                    yield ",".join(names) + "\n"

    # One customer --------------------------------------------------------------------------------------------

    def score_history(self, customer_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            """
            SELECT s.logical_date, s.list_kind, s.score, s.risk_band, s.risk_decile, s.decision, s.model_version,
                   s.cutoff, r.roc_auc, r.observed_rate, o.outcome
            FROM churnops.scores s
            LEFT JOIN churnops.realized_performance r
              ON r.dataset = s.dataset AND r.logical_date = s.logical_date AND r.list_kind = s.list_kind
             AND r.model_version = s.model_version
            LEFT JOIN churnops.realized_outcomes o
              ON o.dataset = s.dataset AND o.customer_id = s.customer_id AND o.logical_date = s.logical_date
             AND o.list_kind = s.list_kind AND o.model_version = s.model_version
            WHERE s.customer_id = %s AND s.dataset = %s
            ORDER BY s.logical_date DESC, s.list_kind LIMIT 60
            """,
            (customer_id, self.dataset),
        )
        names = ("logical_date", "list_kind", "score", "risk_band", "risk_decile", "decision", "model_version")
        extra = ("cutoff", "list_roc_auc", "list_observed_rate", "outcome")
        return [dict(zip((*names, *extra), row, strict=True)) for row in rows]

    def published_features(self, customer_id: str) -> tuple[dt.date, dict[str, Any]] | None:
        rows = self._rows(
            "SELECT cutoff, features FROM churnops.online_features WHERE dataset = %s AND customer_id = %s",
            (self.dataset, customer_id),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    # The model -----------------------------------------------------------------------------------------------

    def model_records(self, model_name: str, model_version: str) -> dict[str, list[dict[str, Any]]]:
        """Evaluations of the version, gate decisions, the latest drift run and its features, retraining decisions,
        realized performance and the latest replay's timeline."""
        dataset = self.dataset
        drift = self._records(
            "SELECT * FROM churnops.drift_runs WHERE dataset = %s ORDER BY started_at DESC LIMIT 1", (dataset,)
        )
        return {
            "evaluations": self._records(
                """SELECT eval_cutoff, metric, value FROM churnops.model_evaluations
                   WHERE model_name = %s AND model_version = %s ORDER BY eval_cutoff DESC, metric""",
                (model_name, model_version),
            ),
            "promotions": self._records(
                """SELECT decided_at, challenger_version, champion_version, promoted, reason, metric,
                          challenger_value, champion_value FROM churnops.promotion_decisions
                   WHERE model_name = %s ORDER BY decided_at DESC LIMIT 5""",
                (model_name,),
            ),
            "drift": drift,
            "drift_features": self._records(
                """SELECT feature, psi, importance, drifted, missing_share FROM churnops.drift_metrics
                   WHERE drift_run_id = %s ORDER BY drifted DESC, psi DESC NULLS LAST LIMIT 12""",
                (drift[0]["drift_run_id"],),
            )
            if drift
            else [],
            "decisions": self._records(
                """SELECT decided_at, run_date, trigger, fired, advisory, reason FROM churnops.retrain_decisions
                   WHERE dataset = %s ORDER BY decided_at DESC LIMIT 10""",
                (dataset,),
            ),
            "realized": self._records(
                """SELECT logical_date, model_version, n_scored, roc_auc, precision_at_10, mean_score, observed_rate
                   FROM churnops.realized_performance WHERE dataset = %s ORDER BY logical_date DESC LIMIT 8""",
                (dataset,),
            ),
            "replay": self._records(
                """SELECT run_date, champion_version, decision_trigger, decision_reason, training_outcome,
                          trained_version, realized_roc_auc
                   FROM churnops.replay_timeline
                   WHERE replay_id = (SELECT replay_id FROM churnops.replay_timeline WHERE dataset = %s
                                      ORDER BY recorded_at DESC LIMIT 1)
                   ORDER BY run_date""",
                (dataset,),
            ),
        }
