"""Watching the champion: drift, the retraining decision, realized performance, the Prometheus exporter, timelines.

Its one import name is `churnops.monitoring` (docs/architecture.md, "Packaging")."""

if __name__ != "churnops.monitoring":
    # The checkout's root is on sys.path (the editable install's .pth, `python -m` from the root), so this folder is
    # also reachable as a top-level `monitoring`; refusing that name keeps one module object per file.
    raise ImportError(f"import churnops.monitoring, not {__name__} (docs/architecture.md, Packaging)", name=__name__)
