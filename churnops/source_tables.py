"""How a contract's `postgres` event source is read: a table (`events.path: schema.table`) read by Spark through
JDBC in parallel slices (`jobs/landing_postgres.py`), and known between runs by a cheap fingerprint."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PostgresTableRead(BaseModel):
    """`events.postgres`: how the table is sliced for reading, and which column tells that it changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A numeric, date or timestamp column: Spark reads `num_partitions` slices of [lower_bound, upper_bound) in
    # parallel (rows outside the bounds are still read, by the first and last slice). None: one reader.
    partition_column: str | None = None
    lower_bound: str | None = None
    upper_bound: str | None = None
    num_partitions: int = Field(1, ge=1, le=1024)
    # The fingerprint is the row count and this column's maximum (default: the event timestamp column); use an
    # updated-at column when rows are corrected in place.
    fingerprint_column: str | None = None

    @model_validator(mode="after")
    def _bounds_come_with_a_column(self) -> PostgresTableRead:
        has_bounds = self.lower_bound is not None and self.upper_bound is not None
        if self.partition_column is not None and not has_bounds:
            raise ValueError("events.postgres.partition_column needs lower_bound and upper_bound")
        if self.partition_column is None and self.num_partitions > 1:
            raise ValueError("events.postgres.num_partitions > 1 needs a partition_column and its bounds")
        return self
