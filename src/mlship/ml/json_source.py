"""JSON API sources: the records of an http(s) API's JSON answer, columns picked by JSON path.

One source string, so that it fits the trigger form's `dataset` field::

    json+https://api.example.com/v1/obs?city=oslo#records=data.list&columns=temp:main.temp,target:label

- the URL after `json+` is fetched as it is (the fragment never leaves this process);
- `records=` is the path of the list of records in the answer (left out, or `$`: the answer itself);
- `columns=` maps each column to a path within a record, `name:path` separated by commas; a bare
  path names its column after itself; a trailing `?` makes a field optional (a record without it
  gives null), otherwise a record without it is an error.

A path is dot-separated keys; a segment of digits indexes a list (`weather.0.main`); `$` is the
value itself. Values are kept as JSON gives them: a number stays a number, a string a string
("21.5" is not converted), null is a missing value.

The request's headers (API keys) come from the environment, never from the source string, which
is logged: names.SOURCE_HEADERS_ENV holds a JSON object keyed by host, each value the headers
that host gets::

    {"api.example.com": {"X-Api-Key": "..."}, "localhost:8080": {"Authorization": "Bearer ..."}}

A request gets the headers of its URL's `host:port` if that is a key, else those of its bare
`host` (any port), else none: a source naming another host never sees a key (and a redirect
carries them to the same origin only, mlship.ml.datasets.download).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pandas as pd

from mlship import names
from mlship.ml.datasets import DatasetError

PREFIX = "json+"
SCHEMES = ("http", "https")
ROOT = "$"
OPTIONAL = "?"
HEADERS_ENV = names.SOURCE_HEADERS_ENV
_KEYS = ("records", "columns")
_SHOWN_KEYS = 20


@dataclass(frozen=True)
class Column:
    name: str
    path: str
    optional: bool = False


@dataclass(frozen=True)
class JsonSource:
    url: str
    """What is fetched: the http(s) URL without `json+` and without the fragment."""
    records: str
    columns: tuple[Column, ...]


def is_json_source(source: str) -> bool:
    return source.startswith(tuple(f"{PREFIX}{s}://" for s in SCHEMES))


def parse_source(source: str) -> JsonSource:
    """The URL, records path and column mapping of a `json+http(s)://...#records=..&columns=..`."""
    if not is_json_source(source):
        raise DatasetError(f"JSON source {source!r}: must start with json+https:// or json+http://")
    parts = urlsplit(source[len(PREFIX):])
    url = urlunsplit(parts._replace(fragment=""))
    options: dict[str, str] = {}
    for item in filter(None, parts.fragment.split("&")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in _KEYS or not eq:
            raise DatasetError(
                f"JSON source {url}: unknown option {item!r} after '#'; "
                "use records=<path>&columns=<name>:<path>,..."
            )
        if key in options:
            raise DatasetError(f"JSON source {url}: {key}= is given twice")
        options[key] = value
    records = unquote(options.get("records", "")).strip() or ROOT
    split_path(records)  # checked now, before anything is fetched
    if not options.get("columns", "").strip():
        raise DatasetError(
            f"JSON source {url}: no columns; add #columns=<name>:<path>,... "
            "(e.g. #records=list&columns=temp:main.temp,target:label)"
        )
    return JsonSource(url, records, parse_columns(options["columns"], url))


def parse_columns(text: str, url: str) -> tuple[Column, ...]:
    columns: list[Column] = []
    for item in text.split(","):
        name, colon, path = item.partition(":")
        name, path = unquote(name).strip(), unquote(path).strip()
        if not colon:
            path = name
        optional = path.endswith(OPTIONAL)
        path = path.removesuffix(OPTIONAL).strip()
        if not colon:
            name = path
        if not name or not path:
            raise DatasetError(
                f"JSON source {url}: column {item.strip()!r} needs a name and a path (<name>:<path>)"
            )
        split_path(path)
        if any(c.name == name for c in columns):
            raise DatasetError(f"JSON source {url}: column {name!r} is mapped twice")
        columns.append(Column(name, path, optional))
    return tuple(columns)


def split_path(path: str) -> list[str]:
    """The segments of a dotted path; `$` is the value itself (no segments)."""
    if path == ROOT:
        return []
    segments = path.split(".")
    if any(not s.strip() for s in segments):
        raise DatasetError(f"JSON path {path!r} has an empty segment; write keys.like.this or {ROOT}")
    return [s.strip() for s in segments]


_MISSING = object()


def lookup(value: Any, segments: Sequence[str]) -> Any:
    """The value at `segments` within `value`, or _MISSING when the path does not go through
    (a key that is not there, an index past the end, or a step into a value that is no object
    or list: null included)."""
    for segment in segments:
        if isinstance(value, dict):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def kind(value: Any) -> str:
    """A JSON value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return "an object"


def _outline(document: Any) -> str:
    if isinstance(document, dict):
        keys = [str(k) for k in document]
        shown = ", ".join(keys[:_SHOWN_KEYS]) + (", …" if len(keys) > _SHOWN_KEYS else "")
        return f"top-level keys: {shown or '(none)'}"
    return f"the response is {kind(document)}"


def parse_document(data: bytes, url: str) -> Any:
    if not data.strip():
        raise DatasetError(f"source {url!r} is empty (0 bytes of data)")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        start = data[:60].decode("utf-8", "replace")
        raise DatasetError(f"response of {url} is not JSON ({exc}); it starts with {start!r}") from exc


def records_of(document: Any, path: str) -> list[Any]:
    """The list of records at `path`; an error names what is there instead."""
    found = lookup(document, split_path(path))
    if found is _MISSING:
        raise DatasetError(f"records path {path!r} matches nothing in the response; {_outline(document)}")
    where = "the response" if path == ROOT else f"records path {path!r}"
    if not isinstance(found, list):
        hint = f"; name the list with records=<path> ({_outline(document)})" if path == ROOT else ""
        raise DatasetError(f"{where} is {kind(found)}, not a list of records{hint}")
    if not found:
        raise DatasetError(f"{where} is an empty list: no records")
    return found


def frame_of(records: Sequence[Any], columns: Sequence[Column]) -> pd.DataFrame:
    """One row per record, one column per mapping, in the mapping's order. Every record must have
    every field that is not optional, and a field must be a value (not an object or a list)."""
    problems: list[str] = []
    lacking = False
    data: dict[str, list[Any]] = {}
    n = len(records)
    for column in columns:
        segments = split_path(column.path)
        values = [lookup(record, segments) for record in records]
        missing = [i for i, v in enumerate(values) if v is _MISSING]
        if missing and not column.optional:
            lacking = True
            problems.append(
                f"{len(missing)} of {n} records lack field {column.path!r} (column {column.name!r}; "
                f"first: record {missing[0]})"
            )
        nested = [i for i, v in enumerate(values) if isinstance(v, dict | list)]
        if nested:
            problems.append(
                f"field {column.path!r} (column {column.name!r}) is {kind(values[nested[0]])}, not a "
                f"value, in {len(nested)} of {n} records (first: record {nested[0]})"
            )
        data[column.name] = [None if v is _MISSING else v for v in values]
    if problems:
        hint = f"; a trailing {OPTIONAL!r} on a path reads a missing field as null" if lacking else ""
        raise DatasetError("; ".join(problems) + hint)
    return pd.DataFrame(data, columns=[c.name for c in columns])


HEADERS_EXAMPLE = '{"api.example.com": {"X-Api-Key": "..."}}'


def _host_key(key: str) -> str | None:
    """A key of names.SOURCE_HEADERS_ENV as `host` or `host:port` (lowercase), None if it is not
    one (a URL, a path, user info, a bad port)."""
    text = key.strip().lower()
    if not text or any(c in text for c in "/?#@ \t"):
        return None
    try:
        parts = urlsplit(f"//{text}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    return host if port is None else f"{host}:{port}"


def headers_from_env(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The headers per host in names.SOURCE_HEADERS_ENV, keys as `host` or `host:port`
    (lowercase); {} when unset. The whole value is checked, whatever host is asked for.
    Errors name hosts but never repeat a header's value: they are secrets."""
    text = (os.environ if environ is None else environ).get(HEADERS_ENV, "").strip()
    if not text:
        return {}
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise DatasetError(f"${HEADERS_ENV} is not valid JSON (at char {getattr(exc, 'pos', '?')})") from None
    if not isinstance(table, dict):
        raise DatasetError(
            f"${HEADERS_ENV} must be a JSON object of hosts to headers, e.g. {HEADERS_EXAMPLE}"
        )
    out: dict[str, dict[str, str]] = {}
    for key, headers in table.items():
        host = _host_key(key)
        if host is None:
            raise DatasetError(
                f"${HEADERS_ENV}: key {key!r} is not a host or host:port, e.g. {HEADERS_EXAMPLE}"
            )
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in headers.items()
        ):
            raise DatasetError(
                f"${HEADERS_ENV}: the headers of {key!r} must be a JSON object of header names to "
                f"strings, e.g. {HEADERS_EXAMPLE}"
            )
        broken = [k for k, v in headers.items() if any(c in f"{k}{v}" for c in "\r\n\0")]
        if broken:
            raise DatasetError(f"${HEADERS_ENV}: header {broken[0]!r} of {key!r} has a line break or NUL")
        if host in out:
            raise DatasetError(f"${HEADERS_ENV}: host {host!r} is given twice")
        out[host] = dict(headers)
    return out


def headers_for(url: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers names.SOURCE_HEADERS_ENV gives `url`'s host: those of its `host:port`, else of
    its bare host, else none."""
    table = headers_from_env(environ)
    if not table:
        return {}
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # not a port: no headers, and the request fails on its own
        return {}
    return dict(table.get(f"{host}:{port}", table.get(host, {})))
