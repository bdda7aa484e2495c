"""Headless Chromium for the dashboard tests, driven over the DevTools protocol (CDP).

Standard library only: CDP speaks JSON over a websocket, and a minimal RFC 6455 client (masked text frames,
ping/pong, continuation) is all it needs, so the tests add no dependency. Chromium itself comes from
Debian's `chromium` package, installed when missing like `cems/localservices.py` installs mosquitto.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from cems.localservices import ServiceError, apt_install

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PACKAGE = "chromium"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


class BrowserError(RuntimeError):
    pass


def chromium_binary() -> str | None:
    return next((p for p in map(shutil.which, BINARIES) if p), None)


def ensure_chromium(quiet: bool = True) -> str:
    """The path of a Chromium, installing Debian's package (as root, or through sudo) when there is none."""
    found = chromium_binary()
    if found:
        return found
    try:
        apt_install([PACKAGE], list(BINARIES), quiet, lambda: [] if chromium_binary() else list(BINARIES))
    except ServiceError as e:
        raise BrowserError(str(e)) from None
    return chromium_binary()


class WebSocket:
    """A blocking websocket client: enough of RFC 6455 for CDP (text messages, no extensions)."""

    def __init__(self, url: str, timeout: float = 10.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise BrowserError(f"only ws:// URLs, not {url}")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError(f"websocket handshake with {url}: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise BrowserError(f"websocket handshake with {url}: {lines[0]}")
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        if headers.get("sec-websocket-accept") != want:
            raise BrowserError("websocket handshake: wrong Sec-WebSocket-Accept")

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))  # client frames are always masked
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise BrowserError("websocket closed by the browser")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout: float) -> str:
        """The next whole text message; socket.timeout when none arrives in time."""
        self.sock.settimeout(timeout)
        parts = []
        while True:
            b0, b1 = self._exact(2)
            self.sock.settimeout(max(timeout, 30.0))  # a frame once begun is read whole
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._frame(0xA, payload)
            elif opcode == 0x8:
                raise BrowserError("websocket closed by the browser")
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self._frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Chromium:
    """One headless Chromium with one page, driven over CDP.

    `events` keeps every CDP event received; `exceptions()` lists the page's uncaught JavaScript errors.
    """

    def __init__(self, workdir: Path, width: int = 1280, height: int = 800, timeout: float = 30.0):
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "chromium.log"
        args = [ensure_chromium(), "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={workdir}/profile",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--hide-scrollbars", "--lang=en-US", f"--window-size={width},{height}",
                "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
        with open(self.log, "wb") as f:
            self.proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "LANG": "en_US.UTF-8"})
        self.events: list[dict] = []
        self._id = 0
        try:
            port = self._devtools_port(timeout)
            self.ws = WebSocket(self._page_target(port, timeout), timeout)
            self.call("Runtime.enable")
            self.call("Page.enable")
            self.call("Emulation.setLocaleOverride", locale="en-US")
            self.viewport(width, height)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def _devtools_port(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = re.search(r"DevTools listening on ws://[^:/]+:(\d+)/", self.log.read_text(errors="replace"))
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited ({self.proc.returncode}):\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise BrowserError(f"chromium did not start its DevTools server in {timeout} s")

    @staticmethod
    def _page_target(port: int, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise BrowserError("chromium opened no page")

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        self._id += 1
        want = self._id
        self.ws.send(json.dumps({"id": want, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {method} in {timeout} s")
            try:
                msg = json.loads(self.ws.recv(left))
            except TimeoutError:
                continue
            if msg.get("id") == want:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str, await_promise: bool = False):
        """The JSON value of a JavaScript expression in the page; BrowserError if it throws."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError(f"{expression[:80]!r} threw: {d.get('exception', {}).get('description', d)}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        """Poll a JavaScript expression until it is truthy; its value, or AssertionError naming `what`."""
        end = time.monotonic() + timeout
        value = None
        while time.monotonic() < end:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value {value!r}; "
                             f"page errors: {self.exceptions()}")

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout, f"{url} to load")

    def viewport(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params |= {"captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def exceptions(self) -> list[str]:
        return [e["params"]["exceptionDetails"].get("exception", {}).get("description")
                or e["params"]["exceptionDetails"].get("text", "")
                for e in self.events if e["method"] == "Runtime.exceptionThrown"]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (BrowserError, OSError):
            pass
        self.ws.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
