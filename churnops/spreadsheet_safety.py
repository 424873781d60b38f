"""Formula-safe CSV for spreadsheets: one rule for every room that hands a list to a person (the campaign export
of jobs/export.py, the CSV download of serving/pages/).

OWASP "CSV injection": a cell starting with = + - @ (or a tab or carriage return) is run as a formula by Excel,
LibreOffice and Sheets, so a hostile customer id such as `=cmd|'/c calc'!A0` would execute. Such text cells get a
leading apostrophe and show as text; numbers, booleans and timestamps are written as values.
"""

from __future__ import annotations

import pandas as pd

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# UTF-8 with a byte-order mark: Excel then reads accents right.
SPREADSHEET_CSV_ENCODING = "utf-8-sig"


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells cannot run as spreadsheet formulas (a leading apostrophe is added)."""
    safe = frame.copy()
    for column in safe.columns:
        if not (pd.api.types.is_object_dtype(safe[column]) or pd.api.types.is_string_dtype(safe[column])):
            continue  # numbers, booleans and timestamps are written as values, never as formulas
        text = safe[column]
        is_formula = text.map(lambda cell: isinstance(cell, str) and cell.startswith(FORMULA_TRIGGERS))
        safe[column] = text.where(~is_formula, "'" + text.astype(str))
    return safe


def formula_safe_csv_text(frame: pd.DataFrame, *, header: bool = True) -> str:
    """`frame` as formula-safe CSV text (no index): one chunk of a streamed download."""
    return neutralise_formulas(frame).to_csv(index=False, header=header)
