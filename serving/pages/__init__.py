"""Server-rendered pages for the retention and marketing teams who act on the lists (docs/pages.md)."""

from churnops.serving.pages.routes import pages_router

__all__ = ["pages_router"]
