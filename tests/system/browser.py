"""Chromium as a person uses the hub: Debian's chromium (apt) driven by Playwright.

Playwright's own browser download is not reachable from here and not needed:
it drives any recent Chromium through `executable_path`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

from playwright.sync_api import Browser, Page, sync_playwright


def chromium_path() -> str:
    path = os.environ.get("CLOUDJHUB_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise RuntimeError("no chromium: run scripts/bootstrap (it installs Debian's chromium)")
    return path


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    # Chromium's sandbox refuses to run as root, which CI is.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=args)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Page, hub_url: str, username: str, password: str) -> None:
    """Fill JupyterHub's login form the way a person does."""
    page.goto(hub_url + "hub/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("#login_submit")
