"""Request models generated from the served model's feature schema.

A customer record must carry every feature the model was trained on, with the right type, and nothing else:
numeric features are finite numbers or null (missing), categorical features are strings or null. Anything else is a
422 that names the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, create_model

from churnops.schema import FeatureSchema

FiniteNumber = Annotated[float | None, Field(allow_inf_nan=False)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def record_model(schema: FeatureSchema) -> type[BaseModel]:
    """A pydantic model with one required field per feature of `schema`."""
    fields: dict[str, Any] = dict.fromkeys(schema.numeric, (FiniteNumber, ...))
    fields |= dict.fromkeys(schema.categorical, (StrictStr | None, ...))
    return create_model("CustomerFeatures", __base__=_Record, **fields)


def predict_request_model(schema: FeatureSchema) -> type[BaseModel]:
    features = record_model(schema)
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        customer_id=(str | None, Field(None, max_length=128, description="echoed back; not a model input")),
        features=(features, ...),
    )


class Prediction(BaseModel):
    customer_id: str | None
    probability: float
    decision: bool
    threshold: float
    model_name: str
    model_version: str


def validation_problems(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Field-level messages without echoing the submitted values (they may be personal data)."""
    return [{"loc": list(e["loc"]), "type": e["type"], "msg": e["msg"]} for e in errors]
