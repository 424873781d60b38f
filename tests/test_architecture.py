"""The folders are the architecture (docs/architecture.md): imports point from the edges (CLI, DAGs, scripts,
benchmarks) to the stages (`jobs`, `monitoring`, `serving`) to the core (`churnops`), never back; the API never
imports Spark; and every source file stays small enough to hold in one's head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("churnops", "jobs", "serving", "monitoring", "airflow", "scripts", "benchmarks")
STAGES = ("jobs", "monitoring", "serving")
# Who may import whom: a stage imports the core and itself; the core only itself; edges anything.
ALLOWED = {
    "core": {"core"},
    "jobs": {"core", "jobs"},
    "monitoring": {"core", "monitoring"},
    "serving": {"core", "serving"},
}
MAX_LINES = 400


def source_files() -> list[Path]:
    return sorted(p for folder in SOURCE_FOLDERS for p in (REPO / folder).rglob("*.py"))


def room_of_file(path: Path) -> str:
    parts = path.relative_to(REPO).parts
    if parts[0] == "churnops":
        return "edge" if parts[1] == "cli" else "core"
    return parts[0] if parts[0] in STAGES else "edge"


def room_of_module(name: str) -> str | None:
    """The room an imported module belongs to (None: third-party or the standard library)."""
    parts = name.split(".")
    if parts[0] == "churnops" and len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    if parts[0] == "churnops":
        return "edge" if len(parts) > 1 and parts[1] == "cli" else "core"
    return None


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, at the top or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names if node.module in ("churnops",)]
    return names


def test_no_room_imports_a_room_above_it_or_beside_it():
    wrong = []
    for path in source_files():
        room = room_of_file(path)
        if room == "edge":
            continue
        for name in imported_modules(path):
            target = room_of_module(name)
            if target is not None and target not in ALLOWED[room]:
                wrong.append(f"{path.relative_to(REPO)} ({room}) imports {name} ({target})")
    assert wrong == [], "\n".join(wrong)


def test_no_file_imports_a_stage_by_a_top_level_name():
    """The stages are `churnops.jobs`, `churnops.serving`, `churnops.monitoring` (docs/architecture.md, Packaging);
    their folders' bare names would give a second module object for the same file."""
    files = source_files() + sorted((REPO / "tests").rglob("*.py"))
    bare = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in files
        for name in imported_modules(path)
        if name.split(".")[0] in STAGES
    ]
    assert bare == []


def test_the_api_never_imports_spark():
    spark = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in source_files()
        if room_of_file(path) in ("serving", "core")
        for name in imported_modules(path)
        if name.split(".")[0] == "pyspark"
    ]
    assert spark == []


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in source_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize(
    ("module", "room"),
    [
        ("churnops.config", "core"),
        ("churnops.cli.stages", "edge"),
        ("churnops.jobs.training", "jobs"),
        ("pandas", None),
    ],
)
def test_rooms_are_read_from_module_names(module, room):
    assert room_of_module(module) == room
