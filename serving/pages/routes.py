"""The pages' routes: sign-in, the current list (filters, budget, paging, CSV), one customer, the model.

Handlers are thin: inputs are read by churnops.serving.pages.list_query, data comes from churnops.serving.pages.store
(PostgreSQL) and the served model (its SHAP contributions), and Jinja2 templates render the HTML. Every page works
without JavaScript.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates

from churnops.banding import DEFAULT_BAND
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import entity_feature_names, event_feature_specs
from churnops.serving.pages.artifacts import ReportArtifacts
from churnops.serving.pages.auth import SESSION_COOKIE, PageAuth
from churnops.serving.pages.list_query import PAGE_ROWS, Cursor, PageInputError, parse_filters
from churnops.serving.pages.reasons import reasons_in_words
from churnops.serving.pages.store import PageStore, StoreUnavailable
from churnops.serving.problems import ApiProblem
from churnops.serving.scoring import PredictionService

HERE = Path(__file__).parent
_NO_VALUE_COLUMNS = (
    "the list of {date} has no expected saved value to sort by (its dataset has no value model, or none was "
    "champion when it was scored): sort by risk"
)
_LOGIN_BODY_LIMIT = 4096


def pages_router(settings: Settings, contract: DatasetContract, service: PredictionService) -> APIRouter:
    """The `/pages` routes for the dataset the API serves, behind the API's key."""
    templates = Jinja2Templates(directory=HERE / "templates")
    auth = PageAuth(settings.serving.api_key)
    store = PageStore(settings, contract.name)
    artifacts = ReportArtifacts()
    numeric_attributes, segment_columns = entity_feature_names(contract)
    definitions = {spec.name: spec.definition for spec in event_feature_specs(contract)}
    band_choices = [*settings.scoring.risk_bands, DEFAULT_BAND]
    router = APIRouter(prefix="/pages", include_in_schema=False)

    def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context |= {"dataset": contract.name, "signed_in": auth.required and auth.allows(request)}
        return templates.TemplateResponse(request, template, context, status_code=status)

    def login_page(request: Request, status: int, error: str | None = None) -> HTMLResponse:
        return page(request, "login.html", status, error=error, next_path=_safe_next(request))

    def problem_page(request: Request, status: int, field: str | None, message: str) -> HTMLResponse:
        return page(request, "problem.html", status, field=field, message=message)

    @router.get("/static/pages.css")
    async def stylesheet() -> FileResponse:
        return FileResponse(HERE / "static" / "pages.css", media_type="text/css")

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        if not auth.required:
            return RedirectResponse("/pages/list", status_code=303)
        return login_page(request, 200)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        body = await request.body()
        form = parse_qs(body[:_LOGIN_BODY_LIMIT].decode(errors="replace"))
        if not auth.key_matches((form.get("api_key") or [""])[0]):
            return login_page(request, 401, "API key: this is not the key the platform is configured with.")
        response = RedirectResponse(_safe_next(request, (form.get("next") or [""])[0]), status_code=303)
        if auth.required:
            response.set_cookie(**auth.session_cookie(request))  # type: ignore[arg-type]
        return response

    @router.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/pages/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/pages")
        return response

    @router.get("", response_class=HTMLResponse)
    async def home() -> Response:
        return RedirectResponse("/pages/list", status_code=303)

    @router.get("/list", response_class=HTMLResponse)
    async def customer_list(request: Request) -> Response:
        if not auth.allows(request):
            return login_page(request, 401)
        params = dict(request.query_params)
        try:
            filters = parse_filters(params, request.query_params.getlist("band"), band_choices, segment_columns)
            after = Cursor.decode("after", params["after"]) if params.get("after") else None
            before = Cursor.decode("before", params["before"]) if params.get("before") else None
            start = int(params.get("start") or 1)
            # The count the first page found, carried by the paging links (it only labels the page).
            carried_matches = max(0, int(params["matches"])) if params.get("matches") else None
            current = await asyncio.to_thread(store.current_list)
        except PageInputError as error:
            return problem_page(request, 422, error.field, error.message)
        except ValueError:
            return problem_page(request, 422, "start", "start and matches must be whole numbers")
        except StoreUnavailable as error:
            return problem_page(request, 503, None, str(error))
        if current is None:
            return problem_page(request, 404, None, f"No scoring list of {contract.name} yet: run the scoring job.")
        if filters.sort == "saved_value" and not current.has_value:
            return problem_page(request, 422, "sort", _NO_VALUE_COLUMNS.format(date=current.logical_date))
        sort_key = "campaign_rank" if filters.sort == "saved_value" else "score"
        selected = filters.selected_count
        rows_wanted = PAGE_ROWS if selected is None else max(0, min(PAGE_ROWS, selected - start + 1))

        def read() -> tuple[list[dict[str, Any]], int]:
            # One row more than the page shows: whether a next page exists, without counting the whole list.
            wanted = rows_wanted + 1 if rows_wanted else 0
            if after is None and before is None and filters.segments:
                # The first page of a segment filter: one walk from the top serves the page and the capped count.
                found = store.list_page(current, filters, rows=max(wanted, filters.count_cap + 1))
                matches, found = len(found), found[:wanted]
            else:
                found = store.list_page(current, filters, rows=wanted, after=after, before=before) if wanted else []
                matches = carried_matches if carried_matches is not None else store.count_matches(current, filters)
            return store.with_segments(found, segment_columns), matches

        try:
            rows, matches = await asyncio.to_thread(read)
        except StoreUnavailable as error:
            return problem_page(request, 503, None, str(error))
        has_more = len(rows) > rows_wanted
        rows = rows[1:] if before is not None and has_more else rows[:rows_wanted]
        has_more = has_more or before is not None
        # The choices of a segment are the served model's categories (its schema); without a model, a text box.
        served = service.state.current
        segment_values = {
            c: list(served.model.schema.categorical.get(c, ())) if served else [] for c in segment_columns
        }
        count_capped = matches > filters.count_cap
        shown_total = matches if selected is None else selected if count_capped else min(matches, selected)
        filter_items = filters.query_items()
        links = {"csv": "/pages/list.csv?" + urlencode(filter_items)}
        filter_items.append(("matches", str(matches)))
        if rows and has_more:
            last = Cursor(rows[-1][sort_key], rows[-1]["customer_id"])
            links["next"] = "?" + urlencode([*filter_items, ("after", last.encode()), ("start", start + len(rows))])
        if rows and start > 1:
            first = Cursor(rows[0][sort_key], rows[0]["customer_id"])
            previous_start = max(1, start - PAGE_ROWS)
            links["previous"] = "?" + urlencode([*filter_items, ("before", first.encode()), ("start", previous_start)])
        return page(
            request,
            "list.html",
            current=current,
            rows=rows,
            start=start,
            matches=matches,
            count_capped=count_capped,
            count_cap=filters.count_cap,
            shown_total=shown_total,
            filters=filters,
            selected=selected,
            spend=None
            if selected is None or filters.cost_per_contact is None
            else shown_total * filters.cost_per_contact,
            band_choices=band_choices,
            segment_columns=segment_columns,
            segment_values=segment_values,
            links=links,
        )

    @router.get("/list.csv")
    async def export_list(request: Request) -> Response:
        if not auth.allows(request):
            return login_page(request, 401)
        params = dict(request.query_params)
        try:
            filters = parse_filters(params, request.query_params.getlist("band"), band_choices, segment_columns)
            current = await asyncio.to_thread(store.current_list)
        except PageInputError as error:
            return problem_page(request, 422, error.field, error.message)
        except StoreUnavailable as error:
            return problem_page(request, 503, None, str(error))
        if current is None:
            return problem_page(request, 404, None, f"No scoring list of {contract.name} yet: run the scoring job.")
        if filters.sort == "saved_value" and not current.has_value:
            return problem_page(request, 422, "sort", _NO_VALUE_COLUMNS.format(date=current.logical_date))
        name = f"{contract.name}_list_{current.logical_date.isoformat()}.csv"
        chunks = store.export_csv(current, filters, segment_columns, filters.selected_count)
        return StreamingResponse(
            _with_bom(chunks),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @router.get("/customers/{customer_id}", response_class=HTMLResponse)
    async def customer(request: Request, customer_id: str) -> Response:
        if not auth.allows(request):
            return login_page(request, 401)
        try:
            history = await asyncio.to_thread(store.score_history, customer_id)
            published = await asyncio.to_thread(store.published_features, customer_id)
        except StoreUnavailable as error:
            return problem_page(request, 503, None, str(error))
        if not history and published is None:
            return problem_page(request, 404, "customer_id", f"No customer {customer_id!r} in {contract.name}.")
        reasons, reasons_error, live_score = [], None, None
        if published is not None:
            try:
                current_model = service.served()
                instance = SimpleNamespace(features=None, customer_id=customer_id)
                rows = await service.rows_of_instances(current_model, [instance], ())
                # The same path as /predict?explain=true: range policy, score, band and contributions.
                scored = service.score_rows(current_model, rows, explain=True)
                live_score = scored.probabilities[0]
                reasons = reasons_in_words(scored.explanations[0].top_features, definitions)  # type: ignore[index]
            except ApiProblem as problem:
                reasons_error = "; ".join(str(item.get("msg")) for item in problem.problems)
        attributes = published[1] if published else {}
        entity_names = {*numeric_attributes, *segment_columns}
        return page(
            request,
            "customer.html",
            customer_id=customer_id,
            history=history,
            # How the customer's realized outcome reads: the label rule's True and False for this dataset.
            outcome_words=OUTCOME_WORDS.get(contract.label.kind, ("positive", "negative")),
            features_cutoff=published[0] if published else None,
            attributes=[(name, attributes[name]) for name in sorted(entity_names) if name in attributes],
            activity=[(definitions[name], _shown(attributes[name])) for name in definitions if name in attributes][:16],
            reasons=reasons,
            reasons_error=reasons_error,
            live_score=live_score,
        )

    @router.get("/model", response_class=HTMLResponse)
    async def model(request: Request) -> Response:
        if not auth.allows(request):
            return login_page(request, 401)
        current = service.state.current
        if current is None:
            return problem_page(request, 503, None, "No champion model is loaded yet.")
        loaded = current.model
        try:
            records = await asyncio.to_thread(store.model_records, loaded.name, loaded.version)
        except StoreUnavailable as error:
            records, store_error = {}, str(error)
        else:
            store_error = None
        card = await asyncio.to_thread(artifacts.model_card, loaded)
        return page(
            request,
            "model.html",
            model=loaded,
            bands=current.bands.describe(),
            metrics=loaded.metadata.get("out_of_time_metrics", {}),
            card=card,
            plots=await asyncio.to_thread(artifacts.plots, loaded),
            records=records,
            store_error=store_error,
        )

    @router.get("/model/plots/{name}")
    async def plot(request: Request, name: str) -> Response:
        if not auth.allows(request):
            return login_page(request, 401)
        current = service.state.current
        path = await asyncio.to_thread(artifacts.plot_path, current.model, name) if current else None
        if path is None:
            return problem_page(request, 404, "name", f"No plot {name!r} in the served model's report.")
        return FileResponse(path, media_type="image/png")

    return router


# The label rule's answer for one customer once a list's horizon passed, in words (True, False).
OUTCOME_WORDS = {"churn": ("left", "stayed"), "propensity": ("bought", "did not buy")}


def _with_bom(chunks: Any) -> Any:
    # UTF-8 with a byte-order mark, like the campaign export: Excel then reads accents right.
    yield "\ufeff"
    yield from chunks


def _shown(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return "none" if value is None else str(value)


def _safe_next(request: Request, wanted: str | None = None) -> str:
    """Where to go after signing in: a path under /pages only (never another site)."""
    target = wanted if wanted is not None else request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not target.startswith("/pages/") or target.startswith("/pages/login") or "//" in target or "\\" in target:
        return "/pages/list"
    return target
