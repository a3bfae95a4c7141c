"""``refinery mcp``: serve the tools on stdio (for an agent that starts the server) or on
streamable HTTP (for one that connects to it), bound to loopback and guarded by a bearer token.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
import secrets
import sys

TOKEN_ENV = "REFINERY_MCP_TOKEN"
LOOPBACK = "127.0.0.1"


def add_mcp_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mcp", help="serve Refinery's tools to agents over MCP (stdio or streamable HTTP)")
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    p.add_argument(
        "--root",
        action="append",
        default=[],
        help="a folder whose files agents may add as sources (repeatable; default: none, or "
        "$REFINERY_MCP_ROOTS, separated by ':')",
    )
    p.add_argument("--allow-runs", action="store_true", help="let agents materialize stages and jobs")
    p.add_argument("--host", default=LOOPBACK, help="HTTP: the address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8765, help="HTTP: the port (default 8765)")
    p.add_argument(
        "--token",
        default=None,
        help=f"HTTP: the bearer token clients must send (default ${TOKEN_ENV}; else one is generated "
        "and printed on stderr)",
    )
    p.add_argument("--call-log", default=None, help="where to log tool calls (default logs/mcp-calls.jsonl)")
    p.set_defaults(func=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    from refinery_cli.mcp_server.server import Settings, build_server, roots_from_env

    settings = Settings(
        home=args.home,
        roots=args.root or roots_from_env(),
        allow_runs=args.allow_runs,
        call_log=args.call_log,
    )
    server = build_server(settings)
    if args.transport == "stdio":
        server.run("stdio")
        return 0
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        token = secrets.token_urlsafe(32)
        print(f"refinery mcp: bearer token {token}", file=sys.stderr, flush=True)
    if not _is_loopback(args.host):
        print(f"refinery mcp: WARNING: listening on {args.host}, beyond this machine", file=sys.stderr)
    serve_http(server, args.host, args.port, token)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BearerToken:
    """ASGI guard: every HTTP request must carry ``Authorization: Bearer <token>`` (401 otherwise)."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"error": "missing or wrong bearer token (Authorization: Bearer <token>)"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve_http(server, host: str, port: int, token: str) -> None:
    import uvicorn

    app = server.streamable_http_app(host=host)
    print(f"refinery mcp: streamable HTTP on http://{host}:{port}/mcp", file=sys.stderr, flush=True)
    uvicorn.run(BearerToken(app, token), host=host, port=port, log_level="warning", lifespan="on")
