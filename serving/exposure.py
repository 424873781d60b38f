"""Who may reach the API: without an API key and an admin token it listens on this machine only.

Kept apart from the app (no metrics, no model) so the CLI can refuse before uvicorn starts without importing the
app and its Prometheus registry into its own process.
"""

from __future__ import annotations

import ipaddress

from churnops.config import ServingSettings


class OpenExposureError(RuntimeError):
    """The API would listen beyond this machine with no API key or no admin token."""


def refuse_open_exposure(serving: ServingSettings) -> None:
    """Without a key the API is for this machine only: a non-loopback `serving.host` needs `serving.api_key` and
    `serving.admin_token` (anyone who reaches an open API can read every score and reload models at will)."""
    try:
        loopback = ipaddress.ip_address(serving.host).is_loopback
    except ValueError:
        loopback = serving.host == "localhost"
    missing = [name for name in ("api_key", "admin_token") if getattr(serving, name) is None]
    if not loopback and missing:
        raise OpenExposureError(
            f"refusing to serve on {serving.host} without {' and '.join(f'serving.{m}' for m in missing)}: set "
            + " and ".join(f"CHURNOPS_SERVING__{m.upper()}" for m in missing)
            + " (or their secret files), or listen on 127.0.0.1"
        )
