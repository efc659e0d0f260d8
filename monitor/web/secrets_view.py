"""The credentials inventory and rotation view: `/secrets` (HTML) and `/api/secrets` (JSON).

Everything comes from monitor.secrets.api_secrets (store reads only): every credential of every configured
app with its expiry, whether mailwarden's own configuration uses it and what is not known about the consuming
systems' copies (``usage``), rotation state and the reminders sent. Never a secret value.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailwarden.monitor.secrets import api_secrets
from mailwarden.monitor.web import pages


def _doc(request: Request) -> dict:
    web = request.app.state.web
    return api_secrets(web.config(), web.store(), datetime.now(UTC))


async def secrets_page(request: Request) -> Response:
    doc = await asyncio.to_thread(_doc, request)
    return pages.render(request, "secrets.html", doc=doc)


async def secrets_api(request: Request) -> JSONResponse:
    return JSONResponse(await asyncio.to_thread(_doc, request))


ROUTES = [Route("/secrets", secrets_page), Route("/api/secrets", secrets_api)]
