"""The web UI for quality and operations, served by the trace API at ``/ui/``.

Plain HTML, CSS and JavaScript modules shipped in this package (``trace_api/static``):
no build step, no CDN, so it works on a plant network without internet. The pages hold
no data; the browser fetches everything from the JSON API (``/api/v1/...``) with the
user's API key, so the UI sees exactly what the key may see.

Example::

    app = create_app(store)      # create_app mounts the UI
    # browse http://127.0.0.1:8000/ui/
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent / "static"

#: Everything from this origin only: the UI must work offline and never leak a key elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class UiFiles(StaticFiles):
    """Static files with the UI's security headers; the index is always revalidated."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file at ``path`` with a content security policy."""
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_ui(app: FastAPI) -> None:
    """Serve the UI at ``/ui/``; ``/`` and ``/ui`` redirect there."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/ui", include_in_schema=False)
    def ui_without_slash() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", UiFiles(directory=STATIC, html=True), name="ui")
