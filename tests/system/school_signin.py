"""The launched hub re-launched with `--authenticator generic-oauth` against a real
OpenID Connect provider on loopback (oidc-provider-mock), driven from
test_launch.py's full launch so that no second cluster is launched.

What it shows (issue 12): re-running `launch` with other sign-in options reuses
every resource and restarts the hub without stopping a running server; the secret is kept 0600 on the
manager and shown nowhere; a person signs in through the provider in Chromium
and lands in JupyterLab; a user not on the allow list is refused; a TA opens a
student's server and not an admin's; `cloudjhub users add` lets a new user in
without a restart.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from cloudjhub.local.ports import free_port
from tests.system.browser import chromium

CLI = Path(sys.executable).with_name("cloudjhub")
SECRET = "oidc-client-s3cret-never-shown"


@contextlib.contextmanager
def oidc_provider(log: Path) -> Iterator[str]:
    """oidc-provider-mock on loopback: any client, any subject typed into its form."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oidc_provider_mock", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(requests.RequestException):
                    if requests.get(base + "/.well-known/openid-configuration", timeout=2).ok:
                        break
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def session() -> requests.Session:
    s = requests.Session()
    s.verify = False  # the hub's self-signed certificate, pinned by the launch test
    s.trust_env = False
    return s


def provider_sign_in(url: str, who: str) -> tuple[requests.Session, requests.Response]:
    """Through the hub's OAuth login and the provider's form, as `who`; the hub's
    answer to the callback (a redirect when signed in, 403 when refused), not
    followed further, which would start the user's server."""
    s = session()
    form = s.get(url + "hub/oauth_login", timeout=30)
    assert "/oauth2/authorize" in form.url, form.url
    code = s.post(form.url, data={"sub": who}, timeout=60, allow_redirects=False)
    assert "/hub/oauth_callback" in code.headers["location"], code.headers
    return s, s.get(code.headers["location"], timeout=60, allow_redirects=False)


def users(etc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`cloudjhub users` as on the manager (its hub.json, its service token)."""
    return subprocess.run(
        [str(CLI), "users", "class1", *args, "--settings", str(etc / "hub.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def opens(s: requests.Session, url: str, owner: str) -> bool:
    """Whether this session gets into `owner`'s running server: the server's OAuth
    handshake, with the hub's "Authorize access" page (shown for another's server)
    confirmed as a person would."""
    page = s.get(url + f"user/{owner}/lab", timeout=60)
    if page.ok and 'name="scopes"' in page.text:
        form = {
            "_xsrf": re.findall(r'name="_xsrf" value="([^"]*)"', page.text)[0],
            "scopes": re.findall(r'name="scopes" value="([^"]*)"', page.text),
        }
        s.post(page.url, data=form, timeout=60)
    return s.get(url + f"user/{owner}/api/status", timeout=30).status_code == 200


def school_sign_in(
    launch: Callable[..., subprocess.CompletedProcess[str]],
    inventory: Callable[[], Any],
    tls: tuple[str, ...],
    tmp_path: Path,
    url: str,
    etc: Path,
    running_server: tuple[str, Callable[[], str]],
) -> None:
    """`running_server`: a user whose server runs on the hub launched with `tls`, and
    when that server started (asked as the user, through the proxy)."""
    running, started = running_server
    started_before = started()
    admin_password_file = tmp_path / "cloudjhub-class1-admin-password"
    assert admin_password_file.exists()  # the launch with NativeAuthenticator's
    hub_pid = (etc.parent.parent / "var/lib/cloudjhub/jupyterhub.pid").read_text().strip()
    (tmp_path / "oidc-secret").write_text(SECRET + "\n")
    (tmp_path / "allowed").write_text("sam\ntina  # a TA, made one below\n")
    with oidc_provider(tmp_path / "oidc.log") as provider:
        resources = inventory()
        began = time.monotonic()
        done = launch(
            *tls,
            "--authenticator",
            "generic-oauth",
            "--client-id",
            "cloudjhub-class1",
            "--client-secret-file",
            str(tmp_path / "oidc-secret"),
            "--authorize-url",
            provider + "/oauth2/authorize",
            "--token-url",
            provider + "/oauth2/token",
            "--userdata-url",
            provider + "/userinfo",
            "--username-claim",
            "sub",
            "--allowed-users",
            str(tmp_path / "allowed"),
            "--admin-users",
            f"prof,{running}",
            "--ta-group",
            "tas",
        )
        assert done.returncode == 0, done.stderr
        assert "(reused)" in done.stderr and inventory() == resources  # nothing new made
        print(f"\nre-launch with generic-oauth: {time.monotonic() - began:.1f}s")
        assert f"callback  {url}hub/oauth_callback" in done.stderr
        assert SECRET not in done.stdout + done.stderr
        secret = etc / "oauth_client_secret"
        assert secret.read_text().strip() == SECRET and secret.stat().st_mode & 0o077 == 0
        assert SECRET not in (etc / "hub.json").read_text()
        new_pid = (etc.parent.parent / "var/lib/cloudjhub/jupyterhub.pid").read_text().strip()
        assert new_pid != hub_pid  # the hub restarted ...

        listed = users(etc, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {r["name"]: r for r in json.loads(listed.stdout)}
        assert rows[running]["server"] == "ready"  # ... and the running server survived:
        assert started() == started_before  # the same Jupyter server still answers
        # The provider signs the admins in now: no admin password, the old file gone.
        assert not admin_password_file.exists()
        assert f"{admin_password_file.name}: removed" in done.stderr
        assert rows[running]["admin"] and "students" not in rows[running]["groups"]

        with chromium() as browser:
            page = browser.new_page(ignore_https_errors=True)
            page.goto(url + "hub/oauth_login")
            page.fill("input[name=sub]", "sam")
            page.click("button[type=submit] >> text=Authorize")
            page.wait_for_url("**/user/sam/lab**", timeout=120_000)
            page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
            assert "JupyterLab" in page.title()

        _, refused = provider_sign_in(url, "eve")  # not on the allow list
        assert refused.status_code == 403, refused.status_code

        # tina becomes a TA: she reaches students' servers only, not the admin's
        # (mallory, a user from before, joined the students at the hub's restart).
        made = users(etc, "add", "tina", "--ta")
        assert made.returncode == 0, made.stderr
        tina, home = provider_sign_in(url, "tina")
        assert home.status_code == 302, home.status_code
        assert opens(tina, url, "sam")
        assert not opens(tina, url, running)
        xsrf = {"X-XSRFToken": tina.cookies.get("_xsrf", path="/hub/") or ""}
        students = tina.get(url + "hub/api/users", headers=xsrf, timeout=30)
        assert students.ok and {u["name"] for u in students.json()} == {"sam", "mallory"}

        # A new name on the allow list, no restart.
        _, before = provider_sign_in(url, "walt")
        assert before.status_code == 403
        added = users(etc, "add", "walt")
        assert added.returncode == 0 and "added walt" in added.stdout
        walt, after = provider_sign_in(url, "walt")
        assert after.status_code == 302, after.status_code

        # walt made an admin and unmade, no restart. (A server he opened meanwhile keeps
        # his token until it expires: JupyterHub does not revoke issued tokens.)
        def sees_everyone() -> bool:
            xsrf = {"X-XSRFToken": walt.cookies.get("_xsrf", path="/hub/") or ""}
            reply = walt.get(url + "hub/api/users", headers=xsrf, timeout=30)
            return reply.ok and {"sam", "tina"} <= {u["name"] for u in reply.json()}

        assert not opens(walt, url, "sam") and not sees_everyone()
        promoted = users(etc, "add", "walt", "--admin")
        assert promoted.returncode == 0, promoted.stderr
        assert opens(walt, url, "sam") and sees_everyone()
        listed = users(etc, "list", "--json")
        assert {r["name"]: r["admin"] for r in json.loads(listed.stdout)}["walt"] is True
        demoted = users(etc, "remove", "walt", "--admin")
        assert demoted.returncode == 0, demoted.stderr
        assert not sees_everyone()
        assert (
            etc.parent.parent / "var/lib/cloudjhub/jupyterhub.pid"
        ).read_text().strip() == new_pid
        walt.close()
