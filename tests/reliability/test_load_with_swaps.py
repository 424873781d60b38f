"""Load with hot swaps: a bounded fixed-rate run on loopback — single predictions with features, single predictions
by customer_id (online feature table), 20-row batches — against a real API with everything on (auth, metrics,
prediction log), while the `champion` alias moves twice. Not one request may fail, and every response after a
swap comes from the new version once the poller has seen it."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from churnops.features import CUTOFF, ENTITY_ID
from churnops.registry import configure_mlflow
from churnops.snapshots import latest_snapshot_dir, load_snapshot
from tests.reliability.figures import record
from tests.serving.conftest import start_server
from tests.serving.test_hot_swap import move_champion, register_copy

API_KEY = "load-api-key-0123456789"
RATE_PER_SECOND = 100
DURATION_SECONDS = 60.0
SWAP_AT_SECONDS = (20.0, 40.0)
POLL_SECONDS = 1.0
# Loading a version (registry look-up, artifact read, probe) comes on top of the polling interval; two busy cores.
SWITCH_ALLOWANCE_SECONDS = 8.0
BATCH_ROWS = 20
# Every 10 requests: 6 single with features, 2 single by customer_id, 2 batches.
MIX = ("single",) * 6 + ("by_customer_id",) * 2 + ("batch",) * 2


@dataclass
class Outcome:
    kind: str
    scheduled_at: float  # seconds since the start of the run
    latency_seconds: float  # from the scheduled send time: a late client cannot hide a slow server
    status: int | None
    model_version: str | None
    error: str | None = None


@dataclass
class LoadRun:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200 or o.error is not None]

    def latency_ms(self, quantile: float, kind: str | None = None) -> float:
        values = [o.latency_seconds for o in self.outcomes if kind is None or o.kind == kind]
        return float(np.quantile(values, quantile) * 1000)


async def run_fixed_rate_load(
    base_url: str, bodies: dict[str, list[dict[str, Any]]], swaps: list[tuple[float, Any]]
) -> LoadRun:
    """Send RATE_PER_SECOND requests per second for DURATION_SECONDS on an open-loop schedule (each request at its
    own time, whether or not earlier ones have answered), calling each swap's function at its time."""
    run = LoadRun()
    rng = random.Random(5)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    client = httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=30, limits=limits)
    async with client:

        async def one(index: int, scheduled: float, started: float) -> None:
            kind = MIX[index % len(MIX)]
            body = rng.choice(bodies[kind])
            path = "/batch_predict" if kind == "batch" else "/predict"
            try:
                response = await client.post(path, json=body)
                answer = response.json() if response.status_code == 200 else None
                run.outcomes.append(
                    Outcome(
                        kind,
                        scheduled,
                        time.perf_counter() - started - scheduled,
                        response.status_code,
                        answer and answer["model_version"],
                        None if answer else response.text[:200],
                    )
                )
            except httpx.HTTPError as error:
                run.outcomes.append(
                    Outcome(kind, scheduled, time.perf_counter() - started - scheduled, None, None, repr(error))
                )

        started = time.perf_counter()
        pending_swaps = sorted(swaps, key=lambda swap: swap[0])
        tasks = []
        for index in range(int(RATE_PER_SECOND * DURATION_SECONDS)):
            scheduled = index / RATE_PER_SECOND
            while pending_swaps and pending_swaps[0][0] <= scheduled:
                # The registry call blocks for a moment: off the event loop, so the schedule keeps going.
                tasks.append(asyncio.create_task(asyncio.to_thread(pending_swaps.pop(0)[1])))
            await asyncio.sleep(max(0.0, started + scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index, scheduled, started)))
        await asyncio.gather(*tasks)
    return run


def request_bodies(platform, example_request: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Real rows of the snapshot at the scoring cutoff (the customers the online table holds)."""
    frame, metadata = load_snapshot(latest_snapshot_dir(platform.settings, platform.contract.name))
    scoring = frame[frame[CUTOFF] == np.datetime64(dt.date.fromisoformat(metadata.cutoffs["scoring"][0]))]
    names = list(example_request["features"])
    records = [
        {"customer_id": str(row[ENTITY_ID]), "features": {n: _json_value(row[n]) for n in names}}
        for _, row in scoring.head(200).iterrows()
    ]
    return {
        "single": records,
        "by_customer_id": [{"customer_id": r["customer_id"]} for r in records],
        "batch": [{"instances": records[i : i + BATCH_ROWS]} for i in range(0, len(records) - BATCH_ROWS, 7)],
    }


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is np.nan:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@pytest.mark.slow
def test_fixed_rate_load_with_two_champion_swaps_fails_no_request(
    trained_platform, published_platform, example_request, tmp_path, restore_champion
) -> None:
    settings, contract = trained_platform.settings, trained_platform.contract
    first = trained_platform.model_version
    configure_mlflow(settings)
    second = register_copy(settings, contract, first, threshold=0.0222)
    third = register_copy(settings, contract, first, threshold=0.0333)
    bodies = request_bodies(trained_platform, example_request)
    server = start_server(
        settings,
        tmp_path,
        workers=2,
        env={
            "CHURNOPS_DATABASE_URL": published_platform.database_url.get_secret_value(),
            "CHURNOPS_SERVING__API_KEY": API_KEY,
            "CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS": str(POLL_SECONDS),
        },
    )
    try:
        swaps = [
            (at, lambda v=version: move_champion(contract, v))
            for at, version in zip(SWAP_AT_SECONDS, (second, third), strict=True)
        ]
        run = asyncio.run(run_fixed_rate_load(server.base_url, bodies, swaps))
        model_card = httpx.get(f"{server.base_url}/model", timeout=5).json()
    finally:
        server.stop()

    sent, failed = len(run.outcomes), len(run.failures)
    by_version = {v: sum(o.model_version == v for o in run.outcomes) for v in (first, second, third)}
    record(
        "load_with_two_swaps",
        rate_per_second=RATE_PER_SECOND,
        duration_seconds=DURATION_SECONDS,
        workers=2,
        requests_sent=sent,
        requests_failed=failed,
        rows_scored=sum(BATCH_ROWS if o.kind == "batch" else 1 for o in run.outcomes if o.status == 200),
        throughput_per_second=round(sent / DURATION_SECONDS, 1),
        p50_ms=round(run.latency_ms(0.50), 2),
        p99_ms=round(run.latency_ms(0.99), 2),
        max_ms=round(run.latency_ms(1.0), 2),
        p99_ms_by_kind={kind: round(run.latency_ms(0.99, kind), 2) for kind in sorted(set(MIX))},
        responses_by_version=by_version,
        swaps=2,
    )
    assert sent == int(RATE_PER_SECOND * DURATION_SECONDS)
    assert failed == 0, [f"{o.kind} at {o.scheduled_at:.2f}s: {o.status} {o.error}" for o in run.failures[:5]]
    # Each version served while it was champion, and every response once the poller has certainly seen it.
    for version, (begins, ends) in {
        first: (0.0, SWAP_AT_SECONDS[0]),
        second: (SWAP_AT_SECONDS[0] + SWITCH_ALLOWANCE_SECONDS, SWAP_AT_SECONDS[1]),
        third: (SWAP_AT_SECONDS[1] + SWITCH_ALLOWANCE_SECONDS, DURATION_SECONDS),
    }.items():
        window = {o.model_version for o in run.outcomes if begins <= o.scheduled_at < ends}
        assert window == {version}, f"between {begins:.0f} s and {ends:.0f} s the API answered with {window}"
    assert model_card["version"] == third and model_card["threshold"] == 0.0333
