"""Request and response models of the API; the request models are generated from the served model's schema.

A customer record must carry every feature the model was trained on, with the right JSON type, and nothing else:
numeric features are finite JSON numbers or null (missing) — and, since rows often come from a CSV read as text,
a numeric string ("29.85", " 45 ") is read as its number and an empty or blank one ("", " ") as missing; a word, a
boolean, NaN or Infinity is refused — and categorical features are strings or null (a value the model never saw is
scored as missing, like in batch scoring). Anything else is a 422 that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, StringConstraints, create_model

from churnops.schema import FeatureSchema

# A number as a CSV writes it, or a blank cell; surrounding whitespace allowed. Python's `float` accepts more
# ("1_000", "nan", "infinity", non-ASCII digits): only text matching this is read as a number, so that the OpenAPI
# schema below describes exactly what is accepted.
NUMERIC_TEXT = r"\s*([+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)?\s*"
_NUMERIC_TEXT = re.compile(NUMERIC_TEXT)
# Longest numeric string read as a number (a CSV cell of a double needs at most 24): it bounds a row's size, from
# which the body cap is derived (`widest_row_bytes`).
MAX_NUMERIC_TEXT = 32
MAX_CATEGORY_CHARS = 256
MAX_CUSTOMER_ID_CHARS = 128


def number_from_text(value: Any) -> Any:
    """A numeric string as its number, a blank one as missing (None); anything else unchanged, for the strict
    number check to accept or refuse. Runs on numeric fields only, and returns at once for a JSON number."""
    if type(value) is not str or len(value) > MAX_NUMERIC_TEXT or not _NUMERIC_TEXT.fullmatch(value):
        return value
    text = value.strip()
    return float(text) if text else None  # an overflowing "1e400" becomes inf: refused by allow_inf_nan below


# strict: a boolean is not a number here; a string is one only when it reads as a number (`number_from_text`).
FiniteNumber = Annotated[
    float | None,
    Field(strict=True, allow_inf_nan=False),
    BeforeValidator(
        number_from_text,
        json_schema_input_type=float
        | None
        | Annotated[str, StringConstraints(pattern=f"^{NUMERIC_TEXT}$", max_length=MAX_NUMERIC_TEXT)],
    ),
]
CategoryValue = Annotated[StrictStr | None, Field(max_length=MAX_CATEGORY_CHARS)]
CustomerId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CUSTOMER_ID_CHARS)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def record_model(schema: FeatureSchema) -> type[BaseModel]:
    """A pydantic model with one required field per feature of `schema`."""
    fields: dict[str, Any] = dict.fromkeys(schema.numeric, (FiniteNumber, ...))
    fields |= {
        name: (CategoryValue, Field(..., description=f"one of {list(vocab)}; other values are scored as missing"))
        for name, vocab in schema.categorical.items()
    }
    return create_model("CustomerFeatures", __base__=_Record, **fields)


def _one_of_them_required(schema: dict[str, Any]) -> None:
    # Left out is allowed, null is not: the schema must not announce a null default.
    for field in schema["properties"].values():
        field.pop("default", None)
    schema["anyOf"] = [{"required": ["features"]}, {"required": ["customer_id"]}]


def predict_request_model(schema: FeatureSchema, features: type[BaseModel] | None = None) -> type[BaseModel]:
    """`{"customer_id": ..., "features": {...}}`; with `features` left out, the customer's published features
    are looked up in the online feature table. Either may be left out, neither may be null, and at least one must
    be present (the schema says so with `anyOf`; `resolve_features` enforces it)."""
    # A default of None that is not validated: a left-out field is None, an explicit null is refused, and the
    # JSON schema shows the non-null type only.
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra=_one_of_them_required,
        ),
        customer_id=(
            CustomerId,
            Field(None, description="echoed back; required when `features` is left out (online look-up)"),
        ),
        features=(
            features or record_model(schema),
            Field(None, description="the customer's features; leave out to use the latest published ones"),
        ),
    )


def batch_request_model(request_type: type[BaseModel], max_rows: int) -> type[BaseModel]:
    """`{"instances": [PredictRequest, ...]}` with 1 to `max_rows` instances."""
    return create_model(
        "BatchPredictRequest",
        __config__=ConfigDict(extra="forbid"),
        instances=(list[request_type], Field(..., min_length=1, max_length=max_rows)),  # type: ignore[valid-type]
    )


# The widest JSON text of one legal value, as a JSON encoder writes it (UTF-8, `", "` and `": "` separators):
# a number or numeric string at its longest, a string of the longest legal length in 4-byte characters.
_WIDEST_NUMBER = MAX_NUMERIC_TEXT + 2  # quoted numeric text is wider than any double's repr (24)
_UTF8_MAX = 4


def _string_bytes(chars: int) -> int:
    return 2 + chars * _UTF8_MAX


def widest_row_bytes(schema: FeatureSchema) -> int:
    """Bytes of the widest legal instance of `schema` (every value at its widest), separators included."""
    values = [_WIDEST_NUMBER] * len(schema.numeric) + [_string_bytes(MAX_CATEGORY_CHARS)] * len(schema.categorical)
    names = [len(name) + 2 for name in schema.columns]  # quoted; feature names are ASCII identifiers
    features = 2 + sum(name + 2 + value for name, value in zip(names, values, strict=True)) + 2 * (len(names) - 1)
    envelope = len('{"customer_id": , "features": }') + _string_bytes(MAX_CUSTOMER_ID_CHARS)
    return envelope + features


def batch_body_bytes(schema: FeatureSchema, max_rows: int) -> int:
    """The body cap that lets `max_rows` of the widest legal instances through: `{"instances": [row, row, ...]}`."""
    return len('{"instances": []}') + max_rows * widest_row_bytes(schema) + 2 * (max_rows - 1)


class Contribution(BaseModel):
    feature: str
    value: float | str | None = Field(description="the feature's value in this request (null = missing)")
    contribution: float = Field(
        description="the feature's share of the model's log-odds (LightGBM: SHAP value; logistic regression: its term)"
    )


class Explanation(BaseModel):
    """Per-feature shares of the champion's log-odds (SHAP values for LightGBM, the centred logit terms for the
    logistic regression): base + every contribution = the model's log-odds, before the blend/calibration the model
    may apply to reach `probability`."""

    base_log_odds: float = Field(description="the model's log-odds before any feature (its expected log-odds)")
    top_features: list[Contribution] = Field(description="largest contributions by absolute value")


class ScoredCustomer(BaseModel):
    customer_id: str | None
    probability: float
    decision: bool = Field(description="probability >= the threshold stored with the model")
    risk_band: str
    feature_source: Literal["request", "online_store"]
    features_cutoff: str | None = Field(description="cutoff of the looked-up features (online_store only)")
    out_of_range: list[str] = Field(
        default_factory=list,
        description="numeric features outside the range seen in training (scored as sent, or clipped to the range: "
        "serving.out_of_range_policy)",
    )
    explanation: Explanation | None = None
    # From the newest stored list, for a request with a customer_id (serving/list_fields.py); absent for datasets
    # without the model, null when that list does not hold the customer or the database cannot be read.
    expected_value: float | None = Field(
        None, description="datasets with a value model: expected spend over the value horizon, from the newest list"
    )
    expected_saved_value: float | None = Field(
        None, description="datasets with a value model: p(churn) x expected_value x save_rate - contact_cost"
    )
    campaign_rank: int | None = Field(
        None, description="datasets with a value model: rank in the newest list by expected saved value (1 = best)"
    )
    in_campaign: bool | None = Field(
        None, description="datasets with a value model: selected by the campaign's budget in the newest list"
    )
    list_date: str | None = Field(None, description="date of the newest list the value fields come from")
    survival: dict[str, float | bool | str | None] | None = Field(
        None,
        description="datasets with a survival model, for a `customer_id`: p_buy_<t>d, median_days_to_next_purchase "
        "(null past the model's horizon), median_beyond_horizon and list_date, from the newest stored list; null "
        "when that list has none",
    )


class Prediction(ScoredCustomer):
    threshold: float
    model_name: str
    model_version: str


class BatchPrediction(BaseModel):
    model_name: str
    model_version: str
    threshold: float
    predictions: list[ScoredCustomer]


@dataclass(frozen=True)
class ScoredRows:
    """A request's scores, by column (what the response and the prediction log are built from)."""

    probabilities: list[float]
    decisions: list[bool]
    bands: list[str]
    out_of_range: dict[int, list[str]]  # {row: numeric features outside the training range}
    explanations: list[Explanation] | None


def scored_items(
    customer_ids: list[str | None], online_cutoffs: Mapping[int, str], scored: ScoredRows
) -> list[dict[str, Any]]:
    """Each customer's part of a response, as plain dicts in `ScoredCustomer`'s shape (serialised by orjson in one
    call: a pydantic model per row cost more than scoring the batch)."""
    explanations = scored.explanations
    out_of_range = scored.out_of_range
    if not (online_cutoffs or out_of_range or explanations):  # the common case: no per-row look-up to make
        return [
            {
                "customer_id": customer_id,
                "probability": probability,
                "decision": decision,
                "risk_band": band,
                "feature_source": "request",
                "features_cutoff": None,
                "out_of_range": [],
                "explanation": None,
            }
            for customer_id, probability, decision, band in zip(
                customer_ids, scored.probabilities, scored.decisions, scored.bands, strict=True
            )
        ]
    return [
        {
            "customer_id": customer_id,
            "probability": probability,
            "decision": decision,
            "risk_band": band,
            "feature_source": "online_store" if row in online_cutoffs else "request",
            "features_cutoff": online_cutoffs.get(row),
            "out_of_range": out_of_range.get(row, []),
            "explanation": explanations[row].model_dump() if explanations else None,
        }
        for row, (customer_id, probability, decision, band) in enumerate(
            zip(customer_ids, scored.probabilities, scored.decisions, scored.bands, strict=True)
        )
    ]


class Problem(BaseModel):
    loc: list[str | int]
    type: str
    msg: str


class ProblemReport(BaseModel):
    detail: list[Problem]


def validation_problems(errors: list[dict[str, Any]], prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Field-level messages without echoing the submitted values (they may be personal data)."""
    return [{"loc": [*prefix, *e["loc"]], "type": e["type"], "msg": e["msg"]} for e in errors]
