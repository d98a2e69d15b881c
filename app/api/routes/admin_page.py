"""/admin/: the memory-history page, its token login, and the history JSON.

A browser cannot send a bearer header from the address bar, and a token in a URL ends up in
history, proxies' logs and Referer headers. So the page asks for the token in a POSTed form
and answers with a cookie that holds a signed session, never the token:
`<expiry>.<HMAC-SHA256(key derived from the token, expiry)>`. Every worker can check it (they
share the token, no session store), rotating ADMIN_TOKEN ends every session, and the cookie is
HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), Path=/admin,
and Secure over HTTPS. The cookie authorizes only the read-only GETs here; every POST that
changes state (clear, cleanup, trace) still needs the bearer header, which a cross-site form
cannot set, so the cookie opens no CSRF hole. The login POST itself needs the token and is
refused when the browser says it came from another site.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import TOKEN_RESPONSES, AppState, ErrorBody, StateDep, require_admin
from app.core.admin_charts import login_page, page
from app.core.history import thresholds_mb

router = APIRouter()

COOKIE_NAME = "admin_session"
SESSION_SECONDS = 8 * 3600  # a working day; log in again after
MAX_LOGIN_BODY_BYTES = 4096
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",  # no-referrer would make the login Origin "null"
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


def _key(state: AppState) -> bytes | None:
    token = state.settings.admin.token
    if token is None:
        return None
    return hashlib.sha256(b"admin-session\0" + token.get_secret_value().encode()).digest()


def session_value(state: AppState, now: float | None = None) -> str:
    """A new signed session value, valid for SESSION_SECONDS."""
    key = _key(state)
    if key is None:
        msg = "no admin token is set; sessions need ADMIN_TOKEN"
        raise ValueError(msg)
    expiry = str(int((time.time() if now is None else now) + SESSION_SECONDS))
    return f"{expiry}.{hmac.new(key, expiry.encode(), hashlib.sha256).hexdigest()}"


def is_session_valid(state: AppState, value: str | None, now: float | None = None) -> bool:
    """True for an unexpired session value signed with the current token."""
    key = _key(state)
    if key is None or not value:
        return False
    expiry, _, mac = value.partition(".")
    if not expiry.isdigit() or int(expiry) < (time.time() if now is None else now):
        return False
    expected = hmac.new(key, expiry.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac.encode(), expected.encode())


async def require_admin_or_session(request: Request, state: StateDep) -> None:
    """Allow a GET with the bearer header or with a valid session cookie."""
    if is_session_valid(state, request.cookies.get(COOKIE_NAME)):
        return
    await require_admin(request)


def _is_cross_site(request: Request) -> bool:
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] != host


def _history(state: AppState) -> dict[str, Any]:
    settings = state.settings
    history = state.history
    return {
        "interval_seconds": settings.history.interval_seconds,
        "max_samples": settings.history.max_samples,
        "max_workers": settings.history.max_workers,
        "thresholds_mb": thresholds_mb(settings),
        "workers": history.workers() if history is not None else [],
    }


@router.get(
    "/memory/history",
    dependencies=[Depends(require_admin_or_session)],
    responses={
        **TOKEN_RESPONSES,
        503: {"model": ErrorBody, "description": "The memory history is off or not started"},
    },
)
async def memory_history(state: StateDep) -> dict[str, Any]:
    """Every worker's memory samples (RSS, cgroup, caches, level) and events, as columns."""
    if state.history is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "memory history is off (history.interval_seconds is null) or not started",
        )
    return _history(state)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def admin_page(request: Request, state: StateDep) -> Response:
    """The charts with a valid session; otherwise the token form (401)."""
    if not is_session_valid(state, request.cookies.get(COOKIE_NAME)):
        return HTMLResponse(login_page(), status.HTTP_401_UNAUTHORIZED, headers=PAGE_HEADERS)
    return HTMLResponse(page(_history(state)), headers=PAGE_HEADERS)


@router.post("/login", include_in_schema=False)
async def login(request: Request, state: StateDep) -> Response:
    """Check the POSTed token; on success set the session cookie and go to /admin/."""
    if _is_cross_site(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site login refused")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"login body over {MAX_LOGIN_BODY_BYTES} bytes; allowed: a form with token=",
            )
    given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
    token = state.settings.admin.token
    if token is None or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        return HTMLResponse(
            login_page("That token is wrong."), status.HTTP_403_FORBIDDEN, headers=PAGE_HEADERS
        )
    response = RedirectResponse("/admin/", status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)
    is_https = request.url.scheme == "https"
    response.set_cookie(
        COOKIE_NAME,
        session_value(state),
        max_age=SESSION_SECONDS,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=is_https,
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout() -> Response:
    """Forget the session cookie."""
    response = RedirectResponse("/admin/", status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)
    response.delete_cookie(COOKIE_NAME, path="/admin", httponly=True, samesite="strict")
    return response
