"""Who may see the pages: the holder of the API's key (serving.api_key), as the predict endpoints require it.

A browser signs in once with a form that takes the key; the answer sets a session cookie that is HttpOnly (no script
reads it), SameSite=Strict (no other site's page sends it, so no cross-site request acts as the user) and Secure
behind HTTPS. The cookie holds an HMAC of the key, never the key: it is worth nothing once the key is rotated.
Programs may send the key itself as `X-API-Key`. With no key configured (the loopback default) the pages are open,
as the API is.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from pydantic import SecretStr

from churnops.serving.scoring import secret_matches

SESSION_COOKIE = "churnops_pages_session"
_SESSION_PURPOSE = b"churnops-pages-session-v1"
SESSION_SECONDS = 8 * 3600


def session_token(api_key: SecretStr) -> str:
    """The cookie value that stands for `api_key`: derived from it, useless for calling the API."""
    return hmac.new(api_key.get_secret_value().encode(), _SESSION_PURPOSE, hashlib.sha256).hexdigest()


class PageAuth:
    def __init__(self, api_key: SecretStr | None) -> None:
        self.api_key = api_key
        self._token = session_token(api_key) if api_key is not None else None

    @property
    def required(self) -> bool:
        return self.api_key is not None

    def allows(self, request: Request) -> bool:
        """True when no key is configured, or the request carries the key (header) or a valid session cookie."""
        if self.api_key is None or self._token is None:
            return True
        if secret_matches(self.api_key, request.headers.get("x-api-key")):
            return True
        cookie = request.cookies.get(SESSION_COOKIE)
        return cookie is not None and hmac.compare_digest(self._token.encode(), cookie.encode())

    def key_matches(self, given: str | None) -> bool:
        return self.api_key is None or secret_matches(self.api_key, given)

    def session_cookie(self, request: Request) -> dict[str, object]:
        """Keyword arguments of `Response.set_cookie` for a signed-in browser."""
        assert self._token is not None
        return {
            "key": SESSION_COOKIE,
            "value": self._token,
            "max_age": SESSION_SECONDS,
            "path": "/pages",
            "httponly": True,
            "samesite": "strict",
            "secure": request.url.scheme == "https",
        }
