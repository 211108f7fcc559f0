"""A small LTI 1.3 platform (the LMS's side of a launch) on loopback, and the launched
hub re-launched with `--authenticator lti13` against it: part of test_launch.py's
full launch, so no second cluster is launched.

The flow is LTI 1.3's (IMS Security Framework 1.0, section 5.1.1): the platform
starts a third-party login at the hub's `lti13/oauth_login`; the hub redirects the
browser to the platform's authorization endpoint with a state and a nonce; the
platform answers with a form that posts a signed `id_token` back to the hub's
callback, which checks it against the keys the platform serves (JWKS). Here the
browser is a requests session that posts the form as the page's script would.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudjhub.local.ports import free_port
from tests.system.school_signin import session

CLIENT_ID = "cloudjhub-class1-lti"
DEPLOYMENT_ID = "deployment-1"
KID = "platform-key-1"
FORGED = "forged-"  # a login_hint with it: the id_token is signed with another key


class Platform:
    """The platform's keys and endpoints; `forged-NAME` launches sign with a key the
    JWKS does not hold (under the same key id), as an impostor would."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issuer = f"http://{host}:{free_port(host)}"
        self.tool_url = ""  # the hub's, registered with the platform once it is known
        self.requests: list[str] = []

    @property
    def callback(self) -> str:
        return self.tool_url + "hub/lti13/oauth_callback"

    @property
    def authorize_url(self) -> str:
        return self.issuer + "/authorize"

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/jwks"

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]}

    def id_token(self, query: dict[str, str]) -> str:
        hint = query["login_hint"]
        user = hint.removeprefix(FORGED)
        now = int(time.time())
        lti = "https://purl.imsglobal.org/spec/lti/claim/"
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": user,
            "iat": now,
            "exp": now + 300,
            "nonce": query["nonce"],
            lti + "message_type": "LtiResourceLinkRequest",
            lti + "version": "1.3.0",
            lti + "deployment_id": DEPLOYMENT_ID,
            lti + "target_link_uri": self.tool_url,
            lti + "resource_link": {"id": "week-1-notebook"},
            lti + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"],
            lti + "context": {"id": "physics-101", "label": "PHYS101", "title": "Physics"},
        }
        key = self.impostor if hint.startswith(FORGED) else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """The authorization endpoint: only our client and its registered callback."""
        if query.get("client_id") != CLIENT_ID or query.get("redirect_uri") != self.callback:
            return 400, "unknown client or redirect_uri"
        if query.get("response_type") != "id_token" or query.get("response_mode") != "form_post":
            return 400, "not an LTI 1.3 authentication request"
        fields = {"id_token": self.id_token(query), "state": query["state"]}
        inputs = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items()
        )
        page = (
            f'<form method="post" action="{html.escape(self.callback)}">{inputs}</form>'
            "<script>document.forms[0].submit()</script>"
        )
        return 200, page


@contextlib.contextmanager
def running(platform: Platform) -> Iterator[Platform]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            platform.requests.append(url.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/jwks":
                status, body, kind = 200, json.dumps(platform.jwks()), "application/json"
            elif url.path == "/authorize":
                status, body = platform.authorize(query)
                kind = "text/html"
            else:
                status, body, kind = 404, "not found", "text/plain"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    parsed = urlparse(platform.issuer)
    server = ThreadingHTTPServer((parsed.hostname or "", parsed.port or 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield platform
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def lti_launch(platform: Platform, url: str, user: str) -> Any:
    """A launch from the platform as `user`, to the user's JupyterLab: the hub's answer
    to the auto-posted id_token, its redirects followed (a requests.Response)."""
    s = session()
    form = s.get(
        url + "hub/lti13/oauth_login",
        params={
            "iss": platform.issuer,
            "login_hint": user,
            "target_link_uri": url + f"user/{user.removeprefix(FORGED)}/lab",
            "client_id": CLIENT_ID,
            "lti_deployment_id": DEPLOYMENT_ID,
        },
        timeout=30,
    )
    assert form.status_code == 200 and form.url.startswith(platform.authorize_url), form.text
    action = html.unescape(re.findall(r'<form method="post" action="([^"]+)"', form.text)[0])
    fields = {
        k: html.unescape(v)
        for k, v in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.text)
    }
    return s.post(action, data=fields, timeout=120)


def lti13_sign_in(
    launch: Callable[..., subprocess.CompletedProcess[str]],
    tls: tuple[str, ...],
    url: str,
    etc: Path,
    running_user: str,
) -> None:
    """Re-launch with `--authenticator lti13` against the platform; a launch as
    `running_user` (whose server runs) lands in their JupyterLab; a forged one does not."""
    with running(Platform()) as platform:
        platform.tool_url = url
        done = launch(
            *tls,
            "--authenticator",
            "lti13",
            "--client-id",
            CLIENT_ID,
            "--lti-issuer",
            platform.issuer,
            "--lti-authorize-url",
            platform.authorize_url,
            "--lti-jwks-url",
            platform.jwks_url,
            "--username-claim",
            "sub",
        )
        assert done.returncode == 0, done.stderr
        assert f"callback  {platform.callback}" in done.stderr
        assert json.loads((etc / "hub.json").read_text())["authenticator"]["kind"] == "lti13"

        landed = lti_launch(platform, url, running_user)
        assert landed.status_code == 200, (landed.status_code, landed.url)
        assert urlparse(landed.url).path == f"/user/{running_user}/lab", landed.url
        assert "/jwks" in platform.requests  # the hub checked the signature with our keys

        forged = lti_launch(platform, url, FORGED + running_user)
        assert forged.status_code == 400, (forged.status_code, forged.url)
        assert not any(r.cookies.get("jupyterhub-hub-login") for r in forged.history)
        assert "jupyterhub-hub-login" not in forged.headers.get("Set-Cookie", "")
