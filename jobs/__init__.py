"""The batch stage: ingestion into bronze, the Spark feature job, training, scoring, export, value and survival.

Its one import name is `churnops.jobs` (docs/architecture.md, "Packaging")."""

if __name__ != "churnops.jobs":
    # The checkout's root is on sys.path (the editable install's .pth, `python -m` from the root), so this folder is
    # also reachable as a top-level `jobs`; refusing that name keeps one module object per file.
    raise ImportError(f"import churnops.jobs, not {__name__} (docs/architecture.md, Packaging)", name=__name__)
