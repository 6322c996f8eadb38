"""A page opened in headless Chromium, driven over the DevTools protocol.

Chromium (the Debian package ``chromium``) is started with
``--remote-debugging-pipe``: commands go in on its fd 3 and answers and events
come out on its fd 4, each a JSON text ended by a NUL byte.  No port, no
websocket library.  ``open_page`` loads a file and collects everything the
page says on its console, every exception it throws and every log entry
(network failures, Content-Security-Policy violations ...), so a test can
assert the page loaded without one; ``evaluate`` reads the DOM with
JavaScript run by the protocol (the page's own policy allows no script, and
does not bind the protocol's evaluation); ``screenshot`` takes a PNG.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Browser", "BrowserError", "chromium", "open_page"]

#: Seconds one protocol call may take; chromium starts slowly on two shared cores.
CALL_TIMEOUT = 90.0


class BrowserError(Exception):
    """Chromium did not answer, or answered with an error."""


def chromium() -> str | None:
    """The chromium program, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Browser:
    process: subprocess.Popen[bytes]
    commands: int
    answers: int
    session: str = ""
    #: Console calls, exceptions and log entries of the page, as the protocol sent them.
    complaints: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    _next: int = 0
    _buffer: bytes = b""

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("chromium did not answer in time")
            ready, _, _ = select.select([self.answers], [], [], left)
            if ready:
                chunk = os.read(self.answers, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium closed its pipe (exit {self.process.poll()})")
                self._buffer += chunk
        text, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(text)
        if "method" in message:
            self.events.append(message)
            if message["method"] in (
                "Runtime.consoleAPICalled",
                "Runtime.exceptionThrown",
                "Log.entryAdded",
            ):
                self.complaints.append(message)
        return message

    def call(self, method: str, *, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send one command (to the page's session unless ``session=False``); its result."""
        self._next += 1
        command: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session and self.session:
            command["sessionId"] = self.session
        os.write(self.commands, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            message = self._read(deadline)
            if message.get("id") == self._next:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event ``method`` (already received, or the next to come)."""
        deadline = time.monotonic() + CALL_TIMEOUT
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self.events)
            self._read(deadline)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` evaluated in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, *, width: int, height: int) -> None:
        """A PNG of the page's top ``width`` x ``height`` CSS pixels."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@contextmanager
def open_page(
    page: Path, *, width: int = 1280, height: int = 900
) -> Iterator[tuple[Browser, float]]:
    """``page`` loaded in a fresh headless chromium: the browser, and the seconds from
    navigation to the load event."""
    program = chromium()
    if program is None:
        raise BrowserError("chromium is not installed")
    profile = tempfile.mkdtemp(prefix="rabbitry-chromium-")
    to_chromium, commands = os.pipe()
    answers, from_chromium = os.pipe()

    def pipes() -> None:  # in the child: chromium reads fd 3, writes fd 4
        os.dup2(to_chromium, 3)
        os.dup2(from_chromium, 4)

    process = subprocess.Popen(
        [
            program,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(3, 4),
        preexec_fn=pipes,  # noqa: PLW1509 - no threads start chromium here
    )
    os.close(to_chromium)
    os.close(from_chromium)
    browser = Browser(process, commands, answers)
    try:
        target = browser.call("Target.createTarget", session=False, url="about:blank")
        attached = browser.call(
            "Target.attachToTarget", session=False, targetId=target["targetId"], flatten=True
        )
        browser.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable")
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.events.clear()
        browser.complaints.clear()
        started = time.monotonic()
        browser.call("Page.navigate", url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        yield browser, time.monotonic() - started
    finally:
        with suppress(BrowserError, OSError):
            browser.call("Browser.close", session=False)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(commands)
        os.close(answers)
        shutil.rmtree(profile, ignore_errors=True)
