"""The ceiling of the serving benchmark: the champion's bare LightGBM booster behind uvicorn, nothing else.

A plain ASGI app (no framework, no validation, no auth, no metrics, no log, no post-processing): it parses the
churnops request body with orjson, encodes the rows with `FeatureSchema.encode_records` and answers the booster's
probabilities. What the churnops API adds on top of this is its overhead, which `serving_bench.py` reports as a
ratio measured in the same run.

    BENCH_MODEL_NAME=churnops-synthetic BENCH_MODEL_VERSION=3 uvicorn bare_booster_app:app --app-dir benchmarks
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from churnops.config import Settings  # noqa: E402
from churnops.registry import configure_mlflow, load_model_version  # noqa: E402

configure_mlflow(Settings())
MODEL = load_model_version(os.environ["BENCH_MODEL_NAME"], os.environ["BENCH_MODEL_VERSION"])
_JSON_HEADERS = [(b"content-type", b"application/json")]


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":  # readiness
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    request = orjson.loads(await _body(receive))
    instances = request["instances"] if "instances" in request else [request]
    matrix = MODEL.schema.encode_records([instance["features"] for instance in instances])
    scores = MODEL.booster.predict(matrix, num_threads=1)
    await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": orjson.dumps({"predictions": scores.tolist()})})
