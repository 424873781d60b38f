"""The prediction API (FastAPI): the app factory, its routes, middleware and the champion's state.

Its one import name is `churnops.serving` (docs/architecture.md, "Packaging")."""

if __name__ != "churnops.serving":
    # The checkout's root is on sys.path (the editable install's .pth, `python -m` from the root), so this folder is
    # also reachable as a top-level `serving`; refusing that name keeps one module object per file.
    raise ImportError(f"import churnops.serving, not {__name__} (docs/architecture.md, Packaging)", name=__name__)
