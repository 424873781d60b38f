"""The stored list's columns a prediction carries for a `customer_id`: the campaign (expected value, expected saved
value, campaign rank, in campaign) and the survival outlook, read from the newest regular list in one query for the
whole request (`OnlineFeatureReader.list_rows`).

They are the list's, not the request's: what the retention team's list says about the customer. A dataset without a
`value:` (or `survival:`) section answers without those fields; a customer the list does not hold, or a database that
cannot be read, gets nulls, never a failed prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from churnops.dataset import DatasetContract
from churnops.serving.online import OnlineFeatureReader
from churnops.value_contract import VALUE_LIST_COLUMNS


class ListFields:
    """Adds the stored list's columns to a response's items; one per app."""

    def __init__(self, contract: DatasetContract, online: OnlineFeatureReader) -> None:
        self.value = contract.value is not None
        self.survival = contract.survival is not None
        self.online = online
        # What a customer the list does not hold gets (most of a batch, or all of it while no list has the columns):
        # built once, not per item.
        self._absent = self.fields_of(None)

    @property
    def wanted(self) -> bool:
        return self.value or self.survival

    async def add_to(self, items: list[dict[str, Any]], customer_ids: Sequence[str | None]) -> None:
        """Give each item with a customer_id its list fields (one database round trip for all of them)."""
        if not self.wanted:
            return
        # Each customer once, in order (ids are strings on both reading paths): C-level, not a generator per row.
        named = [customer_id for customer_id in dict.fromkeys(customer_ids) if customer_id is not None]
        if not named:
            return
        found = await self.online.list_rows(named) or {}
        absent = self._absent
        for item, customer_id in zip(items, customer_ids, strict=True):
            if customer_id is not None:
                row = found.get(customer_id) if found else None
                item |= absent if row is None else self.fields_of(row)

    def fields_of(self, row: dict[str, Any] | None) -> dict[str, Any]:
        """The response fields of one customer's stored row (None: not in the list, or no database)."""
        fields: dict[str, Any] = {}
        if self.value:
            value = row["value"] if row else None
            fields |= {column: value[column] if value else None for column in VALUE_LIST_COLUMNS}
            fields["list_date"] = row["list_date"] if value else None
        if self.survival:
            fields["survival"] = row["survival"] if row else None
        return fields
