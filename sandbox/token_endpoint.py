"""The sandbox's OAuth2 token service: Google and Microsoft token endpoints, introspection, admin.

It speaks the providers' real protocols over HTTP on 127.0.0.1 so that senders
refresh tokens exactly as in production (RFC 6749 section 6, refresh_token
grant), Dovecot checks IMAP logins through RFC 7662 introspection, and other
processes (tests, the demo) manage sandbox users through a small JSON admin API.
The clock is read here, at the edge, and passed into the authority.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from sendrail.sandbox.oauth_authority import InvalidGrant, OAuthAuthority, Provider

log = structlog.get_logger(__name__)

PasswordUserRegistrar = Callable[[str, str, str], None]
"""(server kind, username, password); KeyError: no such server, ValueError: an OAuth server."""

GOOGLE_SCOPE = "https://mail.google.com/"
MICROSOFT_DEFAULT_SCOPES = (
    "https://outlook.office.com/SMTP.Send",
    "https://outlook.office.com/IMAP.AccessAsUser.All",
)
_PROVIDERS: dict[str, Provider] = {"google": "google", "microsoft": "microsoft"}


def _oauth_error(error: str, description: str, *, status: int = 400, **extra: Any) -> web.Response:
    # RFC 6749 section 5.2: errors are JSON with `error` and `error_description`.
    return web.json_response(
        {"error": error, "error_description": description, **extra}, status=status
    )


def _microsoft_error(error: str, code: int, message: str, *, now_s: float) -> web.Response:
    """Microsoft identity platform errors carry an AADSTS code in description and `error_codes`."""
    return _oauth_error(
        error,
        f"AADSTS{code}: {message}",
        error_codes=[code],
        timestamp=time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now_s)),
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _loopback_only(handler: Handler) -> Handler:
    """The admin API manages credentials: only local processes may call it."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.remote is None or not ipaddress.ip_address(request.remote).is_loopback:
            raise web.HTTPForbidden(text="admin API is loopback only")
        return await handler(request)

    return guarded


async def _json_object(request: web.Request, *fields: str) -> dict[str, str]:
    try:
        body = await request.json()
    except ValueError as error:
        raise web.HTTPBadRequest(text="body must be JSON") from error
    if not isinstance(body, dict) or not all(isinstance(body.get(name), str) for name in fields):
        raise web.HTTPBadRequest(
            text=f"body must be a JSON object with string fields {', '.join(fields)}"
        )
    return {name: body[name] for name in fields}


class TokenEndpoint:
    """The HTTP server; `base_url` is known once started."""

    host = "127.0.0.1"

    def __init__(
        self,
        authority: OAuthAuthority,
        *,
        register_password_user: PasswordUserRegistrar,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._authority = authority
        self._register_password_user = register_password_user
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/google/token", self._google_token)
        app.router.add_post("/microsoft/{tenant}/oauth2/v2.0/token", self._microsoft_token)
        app.router.add_post("/introspect", self._introspect)
        app.router.add_post("/admin/oauth-users", _loopback_only(self._admin_oauth_user))
        app.router.add_post("/admin/password-users", _loopback_only(self._admin_password_user))
        app.router.add_post("/admin/revoke", _loopback_only(self._admin_revoke))
        app.router.add_post("/admin/expire-access", _loopback_only(self._admin_expire_access))
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._application(), access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        log.info("token_endpoint.started", port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- Google: https://developers.google.com/identity/protocols/oauth2/web-server#offline ---

    async def _google_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "refresh_token":
            return _oauth_error(
                "unsupported_grant_type", "Invalid grant_type: " + str(form.get("grant_type", ""))
            )
        if not form.get("client_id"):
            return _oauth_error("invalid_request", "Could not determine client ID from request.")
        refresh_token = form.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            return _oauth_error("invalid_request", "Missing required parameter: refresh_token")
        try:
            issued = self._authority.refresh("google", refresh_token, now_s=self._clock())
        except InvalidGrant:
            log.info("token.refused", provider="google")
            return _oauth_error("invalid_grant", "Token has been expired or revoked.")
        return web.json_response(
            {
                "access_token": issued.access_token,
                "expires_in": issued.expires_in_s,
                "scope": GOOGLE_SCOPE,
                "token_type": "Bearer",
            }
        )

    # --- Microsoft identity platform, "Refresh the access token":
    # https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow ---

    async def _microsoft_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        now_s = self._clock()
        if form.get("grant_type") != "refresh_token":
            return _microsoft_error(
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
                now_s=now_s,
            )
        if not form.get("client_id"):
            return _microsoft_error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
                now_s=now_s,
            )
        refresh_token = form.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            return _microsoft_error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'refresh_token'.",
                now_s=now_s,
            )
        try:
            issued = self._authority.refresh("microsoft", refresh_token, now_s=now_s)
        except InvalidGrant:
            log.info("token.refused", provider="microsoft")
            return _microsoft_error(
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to inactivity.",
                now_s=now_s,
            )
        requested = str(form.get("scope", "")).split()
        # offline_access asks for a refresh token; it is not listed among the granted scopes.
        granted = [scope for scope in requested if scope != "offline_access"] or list(
            MICROSOFT_DEFAULT_SCOPES
        )
        return web.json_response(
            {
                "token_type": "Bearer",
                "scope": " ".join(granted),
                "expires_in": issued.expires_in_s,
                "ext_expires_in": issued.expires_in_s,
                "access_token": issued.access_token,
                # Microsoft rotates refresh tokens: the client must store this one.
                "refresh_token": issued.refresh_token,
            }
        )

    # --- RFC 7662 token introspection, for Dovecot's oauth2 passdb ---

    async def _introspect(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = form.get("token")
        address = None
        if isinstance(token, str) and token:
            address = self._authority.check_access(token, now_s=self._clock())
        if address is None:
            return web.json_response({"active": False})
        return web.json_response({"active": True, "username": address})

    # --- admin API (JSON) ---

    async def _admin_oauth_user(self, request: web.Request) -> web.Response:
        body = await _json_object(request, "provider", "address")
        provider = _PROVIDERS.get(body["provider"])
        if provider is None:
            raise web.HTTPBadRequest(text=f"provider must be one of {', '.join(_PROVIDERS)}")
        refresh_token = self._authority.add_user(provider, body["address"])
        return web.json_response({"refresh_token": refresh_token})

    async def _admin_password_user(self, request: web.Request) -> web.Response:
        body = await _json_object(request, "server", "username", "password")
        try:
            self._register_password_user(body["server"], body["username"], body["password"])
        except KeyError as error:
            raise web.HTTPNotFound(text=f"no server {body['server']!r}") from error
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from error
        return web.Response(status=204)

    async def _admin_revoke(self, request: web.Request) -> web.Response:
        body = await _json_object(request, "address")
        self._authority.revoke(body["address"])
        return web.Response(status=204)

    async def _admin_expire_access(self, request: web.Request) -> web.Response:
        body = await _json_object(request, "address")
        expired = self._authority.expire_access_tokens(body["address"])
        return web.json_response({"expired": expired})
