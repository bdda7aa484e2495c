"""A small InfluxDB 1.x HTTP client: /ping, /write (line protocol) and /query (InfluxQL).

InfluxDB 2.x and 3.x serve the same through their v1-compatible endpoints with a token
(DESIGN §6); set `influx.token` and the client sends ``Authorization: Token ...``.
"""

import logging
import ssl

import httpx

from cems.store.lineproto import apply_nulls

log = logging.getLogger("cems.influx")


class InfluxError(Exception):
    """The database refused a request or could not be reached.

    `transient`: worth retrying (unreachable, 5xx, auth or a missing database an operator can fix), as
    opposed to a request the database will refuse whatever the retry (400: malformed points, a field type
    conflict; 413: a body too large).
    """

    def __init__(self, message: str, transient: bool = True, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


def quote_ident(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Influx:
    def __init__(self, url: str, database: str, username: str | None = None, password: str | None = None,
                 token: str | None = None, timeout_s: float = 10.0, tls: ssl.SSLContext | None = None):
        """`tls`: the context that verifies an https server (`cems.config.tls_context`); default, the system's CAs."""
        self.url = url.rstrip("/")
        self.database = database
        self.token = token
        headers = {"Authorization": f"Token {token}"} if token else {}
        auth = (username, password or "") if username else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers, auth=auth,
                                  verify=tls if tls is not None else True)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise InfluxError(f"InfluxDB at {self.url} unreachable: {e}") from None
        if r.status_code >= 300:
            raise InfluxError(f"InfluxDB {method} {path} -> {r.status_code}: {r.text[:300]}",
                              transient=r.status_code not in (400, 413, 422), status=r.status_code)
        return r

    def ping(self) -> bool:
        try:
            self._request("GET", "/ping")
            return True
        except InfluxError:
            return False

    def create_database(self) -> None:
        """InfluxDB 1.x: create the database if missing. With a token (2.x/3.x) the server manages its buckets
        and databases and refuses InfluxQL's CREATE: the database must exist (docs/deployment.md)."""
        if self.token:
            log.info("InfluxDB with a token (2.x/3.x): using database %r as it is; create it (2.x: a bucket of "
                     "that name) if it does not exist", self.database)
            return
        self._request("POST", "/query", data={"q": f"CREATE DATABASE {quote_ident(self.database)}"})

    def write(self, lines: list[str], precision: str = "ms") -> None:
        """Write points; raises `InfluxError` unless the database confirmed all of them."""
        if not lines:
            return
        body = "\n".join(lines).encode()
        self._request("POST", "/write", params={"db": self.database, "precision": precision}, content=body)

    def query(self, q: str) -> list[dict]:
        """Run one InfluxQL statement; rows as dicts with `time` in epoch ms and the series' tags."""
        r = self._request("POST", "/query", data={"q": q, "db": self.database, "epoch": "ms"})
        body = r.json()
        rows = []
        for res in body.get("results", []):
            if "error" in res:
                raise InfluxError(f"InfluxQL error: {res['error']} in {q[:200]}")
            for series in res.get("series", []):
                cols = series["columns"]
                tags = series.get("tags", {})
                for vals in series["values"]:
                    row = dict(zip(cols, vals, strict=True))
                    row.update(tags)
                    rows.append(apply_nulls(row))
        return rows
