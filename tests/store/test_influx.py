"""The InfluxDB HTTP client against an in-process transport (the real server is in tests/integration)."""

import httpx

from cems.store.influx import Influx


def recording(db: Influx) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"results": [{"statement_id": 0}]})

    db._http = httpx.Client(base_url=db.url, transport=httpx.MockTransport(answer), headers=db._http.headers)
    return seen


def test_influxdb_1x_gets_create_database():
    db = Influx("http://db:8086", "cems")
    seen = recording(db)
    db.create_database()
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/query")]
    assert b"q=CREATE+DATABASE+%22cems%22" in seen[0].content


def test_with_a_token_the_database_is_the_servers_own_no_create_and_token_auth(caplog):
    db = Influx("https://db:8086", "plant-b", token="s3cret")
    seen = recording(db)
    with caplog.at_level("INFO", logger="cems.influx"):
        db.create_database()
    assert seen == [] and "'plant-b'" in caplog.text
    db.write(["reading,plant=p,stack=s co2_pct=13 1"])
    assert seen[0].url.path == "/write" and seen[0].url.params["db"] == "plant-b"
    assert seen[0].headers["authorization"] == "Token s3cret"
