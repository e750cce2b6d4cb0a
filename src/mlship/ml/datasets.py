"""Dataset sources: scikit-learn's bundled sets, CSV/Parquet from a path or an http(s) URL, and
the records of a JSON API's answer (mlship.ml.json_source), a DVC-tracked file in a git repo
(mlship.ml.dvc_source).

Every source is read as raw bytes first, so its digest is a pure function of its content:
the same bytes always give the same digest, whatever the path or URL they came from.
"""

from __future__ import annotations

import hashlib
import io
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlparse

import pandas as pd

from mlship.errors import BadInput

SKLEARN_DATASETS: dict[str, str] = {
    # name -> task; all ship inside scikit-learn, nothing is downloaded
    "iris": "classification",
    "wine": "classification",
    "breast_cancer": "classification",
    "diabetes": "regression",
}
TASKS = ("classification", "regression")
# MLflow stores a dataset digest in a 36-character column; 32 hex chars = 128 bits of sha256.
DIGEST_LENGTH = 32
HTTP_TIMEOUT_SECONDS = 60


# Answers that say the request itself is wrong: asking again gets the same answer.
_PERMANENT_HTTP = frozenset(range(400, 500)) - {408, 425, 429}


class DatasetError(BadInput):
    """A source that cannot be read, named in the message; `permanent` unless a retry may
    succeed (the server did not answer, or answered 5xx/429)."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class LoadedDataset:
    frame: pd.DataFrame
    digest: str
    source: str
    name: str
    task_hint: str | None  # known for sklearn sets, None for files
    lineage: dict[str, str] = field(default_factory=dict)
    """MLflow tags saying where exactly the bytes came from, beyond the source (a DVC commit)."""


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_LENGTH]


def source_kind(source: str) -> str:
    """'sklearn', 'json', 'dvc', 'http' or 'file' for a source string."""
    if source.startswith("sklearn:"):
        return "sklearn"
    if source.startswith("dvc:"):
        return "dvc"
    if source.startswith("json+"):
        return "json"
    if urlparse(source).scheme in ("http", "https"):
        return "http"
    return "file"


def file_format(source: str) -> str:
    """'csv' or 'parquet' from the path's suffix (query strings ignored)."""
    path = urlparse(source).path if source_kind(source) == "http" else source
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".txt"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DatasetError(
        f"source {source!r}: unknown file type {suffix or '(none)'!r}; use .csv or .parquet"
    )


def dataset_name(source: str) -> str:
    kind = source_kind(source)
    if kind == "sklearn":
        return source.split(":", 1)[1]
    if kind == "dvc":
        path = source.rpartition("#")[2].rpartition("@")[0] or source.rpartition("#")[2]
    else:
        path = urlparse(source).path if kind in ("http", "json") else source
    return Path(path).stem or "dataset"


def sklearn_frame(name: str) -> pd.DataFrame:
    from sklearn import datasets as skd

    if name not in SKLEARN_DATASETS:
        raise DatasetError(
            f"unknown scikit-learn dataset {name!r}; choose one of {', '.join(SKLEARN_DATASETS)}"
        )
    loader = getattr(skd, f"load_{name}")
    return loader(as_frame=True).frame


def _origin(url: str) -> tuple[str, str]:
    parts = urlparse(url)
    return parts.scheme, parts.netloc


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, but carries the request's own headers (API keys) only to
    the same scheme, host and port: urllib would hand them to any host a server redirects to."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) == _origin(req.full_url):
            for key, value in req.unredirected_hdrs.items():
                if key.lower() != "host":
                    new.add_unredirected_header(key, value)
        return new


def download(url: str, headers: dict[str, str] | None = None) -> bytes:
    """The body of an http(s) GET; 4xx answers (but 408, 425, 429) are permanent errors.
    `headers` go to `url`'s origin only, never to another host it redirects to."""
    request = urllib.request.Request(url)  # noqa: S310 - scheme checked
    for key, value in (headers or {}).items():
        request.add_unredirected_header(key, value)
    opener = urllib.request.build_opener(_SameOriginRedirects)
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT_SECONDS) as resp:
            data: bytes = resp.read()
            return data
    except OSError as exc:
        permanent = isinstance(exc, HTTPError) and exc.code in _PERMANENT_HTTP
        raise DatasetError(f"cannot download {url}: {exc}", permanent=permanent) from exc


def read_bytes(source: str) -> bytes:
    if source_kind(source) == "http":
        return download(source)
    path = Path(source)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {source}")
    return path.read_bytes()


def parse_bytes(data: bytes, fmt: str, source: str) -> pd.DataFrame:
    if not data.strip():
        raise DatasetError(f"source {source!r} is empty (0 bytes of data)")
    try:
        if fmt == "csv":
            return pd.read_csv(io.BytesIO(data))
        return pd.read_parquet(io.BytesIO(data))
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"source {source!r} has no columns: {exc}") from exc
    except Exception as exc:  # parser errors come in many types; name the source and cause
        raise DatasetError(f"cannot parse {source!r} as {fmt}: {exc}") from exc


def load(source: str) -> LoadedDataset:
    """Read a source into a DataFrame together with its content digest."""
    kind = source_kind(source)
    if kind == "sklearn":
        name = source.split(":", 1)[1]
        frame = sklearn_frame(name)
        # The bundled set has no file of its own; its canonical CSV rendering is its content.
        data = frame.to_csv(index=False).encode()
        return LoadedDataset(frame, content_digest(data), source, name, SKLEARN_DATASETS[name])
    if kind == "json":
        return load_json(source)
    if kind == "dvc":
        return load_dvc(source)
    fmt = file_format(source)
    data = read_bytes(source)
    frame = parse_bytes(data, fmt, source)
    return LoadedDataset(frame, content_digest(data), source, dataset_name(source), None)


def load_json(source: str) -> LoadedDataset:
    """A JSON API's records as a frame; the digest is of the answer's raw bytes."""
    from mlship.ml import json_source  # it imports this module's DatasetError

    spec = json_source.parse_source(source)  # a bad source string fails before any request
    data = download(spec.url, json_source.headers_for(spec.url))
    document = json_source.parse_document(data, spec.url)
    frame = json_source.frame_of(json_source.records_of(document, spec.records), spec.columns)
    return LoadedDataset(frame, content_digest(data), source, dataset_name(source), None)


def load_dvc(source: str) -> LoadedDataset:
    """A DVC-tracked CSV/Parquet at a git revision; the digest is of its bytes, the lineage names
    the repo, the commit, the path and DVC's md5."""
    from mlship.ml import dvc_source  # it imports this module's DatasetError

    spec = dvc_source.parse_source(source)
    fmt = file_format(spec.path)
    file = dvc_source.read(spec)
    frame = parse_bytes(file.data, fmt, source)
    return LoadedDataset(
        frame, content_digest(file.data), source, dataset_name(source), None,
        dvc_source.lineage(spec, file),
    )


def infer_task(target: pd.Series, max_classes: int = 20) -> str:
    """Classification for labels (strings, bools, few distinct integers), else regression."""
    values = target.dropna()
    if (
        pd.api.types.is_bool_dtype(values)
        or pd.api.types.is_object_dtype(values)
        or pd.api.types.is_string_dtype(values)
        or isinstance(values.dtype, pd.CategoricalDtype)
    ):
        return "classification"
    if pd.api.types.is_integer_dtype(values) and values.nunique() <= max_classes:
        return "classification"
    if pd.api.types.is_float_dtype(values):
        integral = bool((values == values.round()).all())
        if integral and values.nunique() <= max_classes:
            return "classification"
    return "regression"
