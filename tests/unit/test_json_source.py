"""JSON API sources: the source string, JSON paths, the column mapping, and a real HTTP server."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pandas as pd
import pytest
from testkit import local_http

from mlship import names
from mlship.ml import datasets
from mlship.ml import json_source as js
from mlship.ml.json_source import Column

pytestmark = pytest.mark.unit

WEATHER = {
    "cod": "200",
    "list": [
        {"main": {"temp": 12.5, "humidity": 80}, "weather": [{"main": "Rain"}], "rain": {"1h": 0.4}},
        {"main": {"temp": 15.0, "humidity": 60}, "weather": [{"main": "Clear"}]},
        {"main": {"temp": None, "humidity": 70}, "weather": [{"main": "Clouds"}]},
    ],
}


def error(call, *args) -> js.DatasetError:
    with pytest.raises(datasets.DatasetError) as info:
        call(*args)
    return info.value


# ------------------------------------------------------------------------------- the source string

def test_a_source_string_says_url_records_and_columns():
    spec = js.parse_source(
        "json+https://api.example.com/v1/obs?city=oslo&n=3#records=data.list"
        "&columns=temp:main.temp, humidity : main.humidity,target:weather.0.main,rain:rain.1h?")
    assert spec.url == "https://api.example.com/v1/obs?city=oslo&n=3"
    assert spec.records == "data.list"
    assert spec.columns == (
        Column("temp", "main.temp"), Column("humidity", "main.humidity"),
        Column("target", "weather.0.main"), Column("rain", "rain.1h", optional=True))


def test_records_left_out_is_the_answer_itself_and_a_bare_path_names_its_column():
    spec = js.parse_source("json+http://h/rows#columns=x,a.b,target?")
    assert spec.url == "http://h/rows" and spec.records == "$"
    assert spec.columns == (Column("x", "x"), Column("a.b", "a.b"), Column("target", "target", True))
    assert js.parse_source("json+http://h/rows#records=%24&columns=x").records == "$"
    assert js.parse_source("json+http://h/rows#columns=a%2Cb:x%3Ay").columns == (Column("a,b", "x:y"),)


H = "JSON source https://h/x: "
NO_COLUMNS = (
    H + "no columns; add #columns=<name>:<path>,... (e.g. #records=list&columns=temp:main.temp,target:label)")
UNKNOWN = "after '#'; use records=<path>&columns=<name>:<path>,..."
NAME_AND_PATH = "needs a name and a path (<name>:<path>)"
EMPTY_SEGMENT = "has an empty segment; write keys.like.this or $"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("json+ftp://h/x#columns=a",
         "JSON source 'json+ftp://h/x#columns=a': must start with json+https:// or json+http://"),
        ("json+https://h/x", NO_COLUMNS),
        ("json+https://h/x#records=list", NO_COLUMNS),
        ("json+https://h/x#rows=list&columns=a", f"{H}unknown option 'rows=list' {UNKNOWN}"),
        ("json+https://h/x#columns", f"{H}unknown option 'columns' {UNKNOWN}"),
        ("json+https://h/x#columns=a&columns=b", f"{H}columns= is given twice"),
        ("json+https://h/x#columns=a:x,a:y", f"{H}column 'a' is mapped twice"),
        ("json+https://h/x#columns=a:x,,b:y", f"{H}column '' {NAME_AND_PATH}"),
        ("json+https://h/x#columns=:x", f"{H}column ':x' {NAME_AND_PATH}"),
        ("json+https://h/x#columns=a:", f"{H}column 'a:' {NAME_AND_PATH}"),
        ("json+https://h/x#columns=a:main..temp", f"JSON path 'main..temp' {EMPTY_SEGMENT}"),
        ("json+https://h/x#records=data.&columns=a", f"JSON path 'data.' {EMPTY_SEGMENT}"),
    ],
)
def test_a_bad_source_string_is_named_before_anything_is_fetched(source, message):
    exc = error(js.parse_source, source)
    assert str(exc) == message and exc.permanent is True


def test_a_json_source_is_its_own_kind_named_after_its_path():
    source = "json+https://api.example.com/v1/forecast?q=oslo#records=list&columns=t:main.temp"
    assert datasets.source_kind(source) == "json" and js.is_json_source(source)
    assert datasets.dataset_name(source) == "forecast"
    assert not js.is_json_source("https://h/x.csv") and not js.is_json_source("json+file:///x")


# ------------------------------------------------------------------------------------ JSON paths

@pytest.mark.parametrize(
    ("path", "value"),
    [("$", WEATHER), ("cod", "200"), ("list.0.main.temp", 12.5), ("list.2.main.temp", None),
     ("list.1.weather.0.main", "Clear")],
)
def test_a_path_walks_objects_and_lists(path, value):
    assert js.lookup(WEATHER, js.split_path(path)) == value


@pytest.mark.parametrize(
    "path", ["nope", "list.3", "list.-1", "list.x", "cod.0", "list.2.main.temp.x", "list.1.rain.1h"])
def test_a_path_that_does_not_go_through_is_missing(path):
    assert js.lookup(WEATHER, js.split_path(path)) is js._MISSING


def test_a_digit_segment_is_a_key_in_an_object():
    assert js.lookup({"0": "zero"}, ["0"]) == "zero"


# -------------------------------------------------------------------------------------- records

def test_records_are_the_list_at_the_path():
    assert js.records_of(WEATHER, "list") == WEATHER["list"]
    assert js.records_of([1, 2], "$") == [1, 2]


NOTHING = "matches nothing in the response"


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        (WEATHER, "data.items", f"records path 'data.items' {NOTHING}; top-level keys: cod, list"),
        ([{"a": 1}], "data", f"records path 'data' {NOTHING}; the response is a list of 1 items"),
        ({}, "data", f"records path 'data' {NOTHING}; top-level keys: (none)"),
        ("text", "data", f"records path 'data' {NOTHING}; the response is a string"),
        (WEATHER, "list.0", "records path 'list.0' is an object, not a list of records"),
        (WEATHER, "cod", "records path 'cod' is a string, not a list of records"),
        ({"data": None}, "data", "records path 'data' is null, not a list of records"),
        ({"data": []}, "data", "records path 'data' is an empty list: no records"),
        ([], "$", "the response is an empty list: no records"),
        (WEATHER, "$", "the response is an object, not a list of records; name the list with "
                       "records=<path> (top-level keys: cod, list)"),
        (3, "$", "the response is a number, not a list of records; name the list with records=<path> "
                 "(the response is a number)"),
    ],
)
def test_records_that_are_not_there_say_what_is(document, path, message):
    assert str(error(js.records_of, document, path)) == message


def test_many_top_level_keys_are_clipped():
    document = {f"k{i}": i for i in range(25)}
    shown = ", ".join(f"k{i}" for i in range(20))
    assert str(error(js.records_of, document, "x")) == (
        f"records path 'x' matches nothing in the response; top-level keys: {shown}, …")


# -------------------------------------------------------------------------------------- columns

def test_the_frame_has_a_column_per_mapping_in_its_order():
    columns = js.parse_columns("target:weather.0.main,temp:main.temp,rain:rain.1h?", "u")
    frame = js.frame_of(WEATHER["list"], columns)
    assert list(frame.columns) == ["target", "temp", "rain"]
    assert frame["target"].tolist() == ["Rain", "Clear", "Clouds"]
    assert frame["temp"].tolist()[:2] == [12.5, 15.0] and pd.isna(frame["temp"][2])  # null: missing
    assert frame["rain"].tolist()[0] == 0.4 and frame["rain"][1:].isna().all()  # optional, absent


def test_values_keep_their_json_types():
    records = [{"n": "21.5", "i": 1, "b": True, "s": "x"}, {"n": "3", "i": 2, "b": False, "s": "y"}]
    frame = js.frame_of(records, js.parse_columns("n,i,b,s", "u"))
    assert frame["n"].tolist() == ["21.5", "3"]  # numbers as strings stay strings
    assert pd.api.types.is_integer_dtype(frame["i"]) and pd.api.types.is_bool_dtype(frame["b"])
    assert datasets.infer_task(frame["n"]) == "classification"  # as a CSV's text column would be


def test_records_that_are_lists_or_values_are_reached_by_index_or_dollar():
    assert js.frame_of([[1, "a"], [2, "b"]], js.parse_columns("x:0,target:1", "u")).values.tolist() == [
        [1, "a"], [2, "b"]]
    assert js.frame_of([5, 6], js.parse_columns("x:$", "u"))["x"].tolist() == [5, 6]


def test_records_lacking_a_field_name_it_and_count_them():
    records = [{"main": {"temp": 1}}, {"main": {}}, {"main": None}, {}, {"main": {"temp": None}}]
    assert str(error(js.frame_of, records, [Column("temp", "main.temp")])) == (
        "3 of 5 records lack field 'main.temp' (column 'temp'; first: record 1); "
        "a trailing '?' on a path reads a missing field as null")


def test_every_bad_column_is_named_in_one_line():
    records = [{"a": {"b": 1}, "c": [1]}, {"a": 2, "c": 3}]
    message = str(error(js.frame_of, records, js.parse_columns("x:a,y:c,z:d,w:a.b?", "u")))
    assert message == (
        "field 'a' (column 'x') is an object, not a value, in 1 of 2 records (first: record 0); "
        "field 'c' (column 'y') is a list of 1 items, not a value, in 1 of 2 records (first: record 0); "
        "2 of 2 records lack field 'd' (column 'z'; first: record 0); "
        "a trailing '?' on a path reads a missing field as null")


def test_an_optional_field_that_is_an_object_is_still_an_error():
    message = str(error(js.frame_of, [{"a": {}}], [Column("x", "a", optional=True)]))
    assert message == "field 'a' (column 'x') is an object, not a value, in 1 of 1 records (first: record 0)"


# ------------------------------------------------------------------------------ the answer's bytes

def test_a_body_that_is_not_json_says_how_it_starts():
    exc = error(js.parse_document, b"<html><body>Service page</body></html>", "https://h/x")
    assert str(exc) == (
        "response of https://h/x is not JSON (Expecting value: line 1 column 1 (char 0)); "
        "it starts with '<html><body>Service page</body></html>'")
    assert exc.permanent is True
    empty = error(js.parse_document, b" \n", "https://h/x")
    assert str(empty) == "source 'https://h/x' is empty (0 bytes of data)"
    assert "is not JSON" in str(error(js.parse_document, b"\xff\xfe\x00", "u"))
    assert js.parse_document(b'{"a": [1]}', "u") == {"a": [1]}


# ---------------------------------------------------------------------------------------- headers

def headers(value: object) -> dict[str, str]:
    return {js.HEADERS_ENV: value if isinstance(value, str) else json.dumps(value)}


def test_headers_come_from_the_environment_keyed_by_host():
    assert js.HEADERS_ENV == names.SOURCE_HEADERS_ENV == "MLSHIP_SOURCE_HEADERS"
    assert js.headers_from_env({}) == {} == js.headers_from_env({js.HEADERS_ENV: "  "})
    env = headers({"API.example.com": {"X-Api-Key": "s3cret"}, "localhost:8080": {"A": "b"}, "h:443": {}})
    assert js.headers_from_env(env) == {
        "api.example.com": {"X-Api-Key": "s3cret"}, "localhost:8080": {"A": "b"}, "h:443": {}}
    assert js.headers_for("https://api.example.com/v1/obs?x=1", env) == {"X-Api-Key": "s3cret"}
    assert js.headers_for("http://Api.Example.com:9000/obs", env) == {"X-Api-Key": "s3cret"}  # any port
    assert js.headers_for("http://localhost:8080/obs", env) == {"A": "b"}
    assert js.headers_for("https://h/x", env) == {}  # h:443 is https' default port


def test_a_url_of_another_host_gets_no_headers():
    env = headers({"api.example.com": {"X-Api-Key": "s3cret"}, "localhost:8080": {"A": "b"}})
    for url in ("https://evil.example.com/obs", "https://api.example.com.evil.net/obs",
                "https://example.com/obs", "http://localhost:8081/obs", "http://localhost/obs",
                "https://api.example.com@evil.net/obs", "http://localhost:x/obs"):
        assert js.headers_for(url, env) == {}, url
    assert js.headers_for("https://api.example.com/obs", {}) == {}


def test_host_and_port_wins_over_the_bare_host():
    env = headers({"h": {"K": "any"}, "h:8443": {"K": "this"}})
    assert js.headers_for("https://h:8443/x", env) == {"K": "this"}
    assert js.headers_for("https://h/x", env) == {"K": "any"}


@pytest.mark.parametrize(("value", "message"), [
    ('{"api.example.com": {"X-Api-Key": s3cret}}',
     "$MLSHIP_SOURCE_HEADERS is not valid JSON (at char 34)"),
    ('["s3cret"]',
     '$MLSHIP_SOURCE_HEADERS must be a JSON object of hosts to headers, '
     'e.g. {"api.example.com": {"X-Api-Key": "..."}}'),
    # the format before headers were keyed by host
    ({"X-Api-Key": "s3cret"},
     "$MLSHIP_SOURCE_HEADERS: the headers of 'X-Api-Key' must be a JSON object of header names to "
     'strings, e.g. {"api.example.com": {"X-Api-Key": "..."}}'),
    ({"api.example.com": {"X-Api-Key": 123}},
     "$MLSHIP_SOURCE_HEADERS: the headers of 'api.example.com' must be a JSON object of header names "
     'to strings, e.g. {"api.example.com": {"X-Api-Key": "..."}}'),
    ({"https://api.example.com": {"X-Api-Key": "s3cret"}},
     "$MLSHIP_SOURCE_HEADERS: key 'https://api.example.com' is not a host or host:port, "
     'e.g. {"api.example.com": {"X-Api-Key": "..."}}'),
    ({"h:99999": {"X-Api-Key": "s3cret"}},
     "$MLSHIP_SOURCE_HEADERS: key 'h:99999' is not a host or host:port, "
     'e.g. {"api.example.com": {"X-Api-Key": "..."}}'),
    ({"": {"X-Api-Key": "s3cret"}},
     "$MLSHIP_SOURCE_HEADERS: key '' is not a host or host:port, "
     'e.g. {"api.example.com": {"X-Api-Key": "..."}}'),
    ({"h": {"X-Api-Key": "s3cret\r\nX-Other: 1"}},
     "$MLSHIP_SOURCE_HEADERS: header 'X-Api-Key' of 'h' has a line break or NUL"),
    ({"H": {"X-Api-Key": "s3cret"}, "h": {"X-Api-Key": "s3cret"}},
     "$MLSHIP_SOURCE_HEADERS: host 'h' is given twice"),
])
def test_a_malformed_value_is_named_without_its_secrets(value, message):
    exc = error(js.headers_from_env, headers(value))
    assert str(exc) == message and "s3cret" not in str(exc)
    assert exc.permanent is True
    # every request checks the whole value, whatever its host
    assert str(error(js.headers_for, "https://other.example.com/x", headers(value))) == message


# ------------------------------------------------------------------------------ a real HTTP server

BODY = json.dumps(WEATHER).encode()


@pytest.fixture
def api():
    """/obs answers WEATHER if the request carries X-Api-Key: k, else 401; /html is a page;
    /busy 503."""
    seen: list[dict[str, str]] = []

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(dict(self.headers))
            path = self.path.split("?")[0]
            if path == "/obs":
                code, body = (200, BODY) if self.headers.get("X-Api-Key") == "k" else (401, b"{}")
            else:
                code, body = {"/html": (200, b"<html></html>")}.get(path, (503, b"busy"))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with local_http(Api) as url:
        yield url, seen


def test_a_json_api_is_fetched_with_the_headers_mapped_and_digested(api, monkeypatch):
    url, seen = api
    monkeypatch.setenv(js.HEADERS_ENV, json.dumps({"127.0.0.1": {"X-Api-Key": "k"}}))
    source = f"json+{url}/obs?city=oslo#records=list&columns=temp:main.temp,target:weather.0.main"
    loaded = datasets.load(source)
    assert (loaded.source, loaded.name, loaded.task_hint) == (source, "obs", None)
    assert loaded.digest == datasets.content_digest(BODY)
    assert list(loaded.frame.columns) == ["temp", "target"] and len(loaded.frame) == 3
    assert seen[-1]["X-Api-Key"] == "k"
    # another mapping of the same answer: the same bytes, the same digest
    assert datasets.load(f"json+{url}/obs#records=list&columns=h:main.humidity").digest == loaded.digest


def test_a_json_apis_http_errors_say_whether_a_retry_can_help(api, monkeypatch):
    url, _ = api
    monkeypatch.delenv(js.HEADERS_ENV, raising=False)
    denied = error(datasets.load, f"json+{url}/obs#columns=a")
    assert str(denied) == f"cannot download {url}/obs: HTTP Error 401: Unauthorized"
    assert denied.permanent is True
    busy = error(datasets.load, f"json+{url}/busy#columns=a")
    assert busy.permanent is False
    page = error(datasets.load, f"json+{url}/html#columns=a")
    assert str(page).startswith(f"response of {url}/html is not JSON (") and page.permanent is True


def test_a_source_of_a_host_without_headers_is_fetched_without_any(api, monkeypatch):
    url, seen = api
    port = url.rsplit(":", 1)[1]
    monkeypatch.setenv(js.HEADERS_ENV, json.dumps(
        {"api.example.com": {"X-Api-Key": "k"}, f"127.0.0.1:{int(port) + 1}": {"X-Api-Key": "k"}}))
    denied = error(datasets.load, f"json+{url}/obs#records=list&columns=t:main.temp")
    assert str(denied) == f"cannot download {url}/obs: HTTP Error 401: Unauthorized"
    assert seen and "x-api-key" not in {k.lower() for k in seen[-1]}


def test_the_headers_follow_a_redirect_to_the_same_origin_only(api, monkeypatch):
    url, seen = api

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            target = {"/same": f"{here}/obs", "/away": f"{url}/obs"}.get(self.path.split("?")[0])
            if target is None:  # /obs here: answers only with the key
                ok = self.headers.get("X-Api-Key") == "k"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(BODY) if ok else 0))
                self.end_headers()
                self.wfile.write(BODY if ok else b"")
                return
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with local_http(Redirect) as here:
        # the key is the redirecting server's only (host:port): the API's own port never gets it
        monkeypatch.setenv(js.HEADERS_ENV, json.dumps({here.removeprefix("http://"): {"X-Api-Key": "k"}}))
        same = datasets.load(f"json+{here}/same#records=list&columns=t:main.temp")
        assert same.digest == datasets.content_digest(BODY)
        away = error(datasets.load, f"json+{here}/away#records=list&columns=t:main.temp")
    assert str(away) == f"cannot download {here}/away: HTTP Error 401: Unauthorized"
    assert seen and "x-api-key" not in {k.lower() for k in seen[-1]}  # the other host never saw the key
