"""The layer as a loopback HTTP proxy in front of an EC2-compatible endpoint.

Why a proxy: every client (the hub, the launcher, a user's boto3 script) then
meets AWS's behaviour by pointing AWS_ENDPOINT_URL at it, and the same layer
works in front of the in-process moto and of an outside `--aws-endpoint`.
EC2 Query API requests (form-encoded, `Action=...`, signed for service `ec2`)
go through the layer; anything else (IAM, STS) is passed on untouched.

It listens twice: `url` for clients, and `internal_url` for the fleet
emulator, which plays AWS itself and so is never throttled or faulted.
`GET /_cloudjhub/awslike` answers the layer's counters as JSON (also per caller:
the `cloudjhub/NAME` each client's User-Agent carries, aws/caller.py), and
`PUT` there with {"faults": {"NAME": RATE}} changes the faults in effect,
so a running demo can rehearse a failure without a restart; {"interrupt_spot":
"i-..."} there makes AWS reclaim that spot instance (in-process moto only).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ...aws.caller import caller_of
from ...aws.local import LocalCloudEc2
from ..motoserver import interrupt_spot
from .layer import Answer, Layer, fail
from .settings import BadSetting, Behaviour, parse_fault

log = logging.getLogger(__name__)

CONTROL_PATH = "/_cloudjhub/awslike"
_SERVICE = re.compile(r"Credential=[^/]*/[^/]*/[^/]*/([^/]*)/")
# Hop-by-hop and length headers are the proxy's own to set.
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


def service_of(headers: dict[str, str], params: dict[str, str]) -> str:
    """The AWS service a request is signed for (its credential scope)."""
    match = _SERVICE.search(headers.get("authorization", ""))
    if match:
        return match.group(1)
    return "ec2" if params.get("Version") == "2016-11-15" else ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], proxy: AwsLikeProxy, internal: bool) -> None:
        super().__init__(address, _Handler)
        self.proxy = proxy
        self.internal = internal


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        log.debug("like-aws: " + format, *args)

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        if self.path == CONTROL_PATH:
            stats = json.dumps(self.server.proxy.layer.stats()).encode()
            self._send(200, stats, [("Content-Type", "application/json")])
            return
        self._forward(b"")

    def do_PUT(self) -> None:
        body = self._body()
        if self.path != CONTROL_PATH:
            self._forward(body)
            return
        try:
            asked = json.loads(body or b"{}")
            if "interrupt_spot" in asked:
                # AWS reclaims a spot instance (motoserver.interrupt_spot).
                interrupt_spot(str(asked["interrupt_spot"]), self.server.proxy.region)
                self._send(200, b"{}")
                return
            wanted = asked.get("faults", {})
            rates = dict(parse_fault(f"{name}:{rate}") for name, rate in wanted.items())
        except (BadSetting, ValueError, AttributeError) as exc:
            self._send(400, str(exc).encode())
            return
        self.server.proxy.layer.faults.set_rates(rates)
        self._send(200, json.dumps(self.server.proxy.layer.stats()).encode())

    def do_POST(self) -> None:
        self._forward(self._body())

    # DLM's REST calls (local/dlm.py) also update and delete policies.
    def do_PATCH(self) -> None:
        self._forward(self._body())

    def do_DELETE(self) -> None:
        self._forward(self._body())

    def _forward(self, body: bytes) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        params = dict(
            urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        )
        action = params.get("Action", "")
        ec2 = bool(action) and service_of(headers, params) == "ec2"
        layer = self.server.proxy.layer
        if ec2:
            try:
                caller = caller_of(headers.get("user-agent", ""))
                answer = layer.before(action, params, self.server.internal, caller)
            except Exception:
                log.exception("like-aws: %s", action)
                answer = fail("InternalError", "An internal error has occurred.")
            if answer is not None:
                self._send(answer.status, answer.body, [("Content-Type", "text/xml")])
                return
        try:
            status, reply_headers, reply = self.server.proxy.upstream(
                self.command, self.path, headers, body
            )
            if ec2 and status == 200:
                try:
                    reply = layer.after(action, params, reply)
                except Exception:
                    log.exception("like-aws: rewriting %s", action)
        except OSError as exc:
            log.warning("like-aws: the endpoint did not answer %s: %s", action or self.path, exc)
            self._send(502, b"")
            return
        finally:
            if ec2:
                layer.forwarded(action, self.server.internal)
        self._send(status, reply, reply_headers)


class AwsLikeProxy:
    """The layer on two loopback ports, in front of `upstream`."""

    def __init__(
        self, upstream: str, region: str, behaviour: Behaviour, host: str = "127.0.0.1"
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"--like-aws needs an http:// endpoint on loopback, not {upstream}")
        self.upstream_url = upstream
        self.region = region
        self._upstream = (parsed.hostname, parsed.port or 80)
        self.layer = Layer(
            behaviour, LocalCloudEc2.connect("like-aws", region, upstream, "like-aws")
        )
        self._servers = [
            _Server((host, 0), self, internal=False),
            _Server((host, 0), self, internal=True),
        ]
        self._threads: list[threading.Thread] = []

    def _url(self, server: _Server) -> str:
        host, port = server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return self._url(self._servers[0])

    @property
    def internal_url(self) -> str:
        return self._url(self._servers[1])

    def upstream(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=120)
        try:
            # Host stays as the client signed it (SigV4 signs it; the endpoint checks).
            sent = {k: v for k, v in headers.items() if k not in _HOP or k == "host"}
            sent["Content-Length"] = str(len(body))
            conn.request(method, path, body, sent)
            response = conn.getresponse()
            reply = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
            return response.status, kept, reply
        finally:
            conn.close()

    def start(self) -> None:
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, name="like-aws", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)


__all__ = ["CONTROL_PATH", "Answer", "AwsLikeProxy"]
