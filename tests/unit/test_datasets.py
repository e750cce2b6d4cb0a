"""Dataset sources and content digests."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pandas as pd
import pytest
from devkit import free_port
from testkit import local_http

from mlship.ml import datasets

pytestmark = pytest.mark.unit


def test_same_bytes_same_digest_wherever_they_live(tmp_path):
    data = b"a,b,target\n1,2,0\n3,4,1\n"
    (tmp_path / "one.csv").write_bytes(data)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.csv").write_bytes(data)
    one = datasets.load(str(tmp_path / "one.csv"))
    two = datasets.load(str(tmp_path / "sub" / "two.csv"))
    assert one.digest == two.digest == datasets.content_digest(data)
    assert len(one.digest) == datasets.DIGEST_LENGTH


def test_one_changed_byte_changes_the_digest(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"a,target\n1,0\n2,1\n")
    (tmp_path / "b.csv").write_bytes(b"a,target\n1,0\n3,1\n")
    assert datasets.load(str(tmp_path / "a.csv")).digest != datasets.load(
        str(tmp_path / "b.csv")
    ).digest


@pytest.mark.parametrize(
    ("name", "task", "rows"),
    [("iris", "classification", 150), ("wine", "classification", 178),
     ("breast_cancer", "classification", 569), ("diabetes", "regression", 442)],
)
def test_sklearn_sets_load_with_their_task_and_a_stable_digest(name, task, rows):
    first = datasets.load(f"sklearn:{name}")
    assert first.task_hint == task
    assert len(first.frame) == rows
    assert "target" in first.frame.columns
    assert datasets.load(f"sklearn:{name}").digest == first.digest


def test_parquet_roundtrip(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0], "target": ["a", "b"]})
    frame.to_parquet(tmp_path / "d.parquet")
    loaded = datasets.load(str(tmp_path / "d.parquet"))
    pd.testing.assert_frame_equal(loaded.frame, frame)
    assert loaded.name == "d"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("sklearn:mnist", "unknown scikit-learn dataset 'mnist'"),
        ("/nonexistent/data.csv", "dataset file not found: /nonexistent/data.csv"),
        ("data.json", "unknown file type '.json'"),
        ("https://example.invalid/x.xlsx", "unknown file type '.xlsx'"),
    ],
)
def test_bad_sources_are_named(source, message):
    with pytest.raises(datasets.DatasetError, match=message.replace(".", r"\.")):
        datasets.load(source)


def test_empty_file_is_reported_as_empty(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(datasets.DatasetError, match="is empty"):
        datasets.load(str(tmp_path / "empty.csv"))


def test_source_kinds_and_formats():
    assert datasets.source_kind("sklearn:iris") == "sklearn"
    assert datasets.source_kind("https://h/x.csv?sig=1") == "http"
    assert datasets.source_kind("./x.csv") == "file"
    assert datasets.file_format("https://h/x.parquet?sig=1") == "parquet"
    assert datasets.dataset_name("https://h/path/house.csv") == "house"


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b", "a"], "classification"),
        ([True, False, True], "classification"),
        ([0, 1, 2, 1], "classification"),
        ([0.0, 1.0, 1.0], "classification"),
        (list(range(100)), "regression"),
        ([0.5, 1.25, 3.0], "regression"),
    ],
)
def test_infer_task(values, task):
    assert datasets.infer_task(pd.Series(values)) == task


# ------------------------------------------------------------------ boundaries (mutation testing)

@pytest.fixture
def http_files():
    """A real HTTP server: /ok.csv is a CSV, /gone.csv 404, /busy.csv 503."""

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            code, body = {"/ok.csv": (200, b"x,target\n1,a\n2,b\n")}.get(
                self.path.split("?")[0], (404 if "gone" in self.path else 503, b"no"))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with local_http(Files) as url:
        yield url


def test_an_http_source_is_downloaded_named_and_digested(http_files):
    loaded = datasets.load(f"{http_files}/ok.csv?sig=1.2")
    assert list(loaded.frame.columns) == ["x", "target"] and len(loaded.frame) == 2
    assert loaded.name == "ok" and loaded.task_hint is None
    assert loaded.digest == datasets.content_digest(b"x,target\n1,a\n2,b\n")


def test_an_http_error_says_whether_a_retry_can_help(http_files):
    with pytest.raises(datasets.DatasetError) as gone:
        datasets.load(f"{http_files}/gone.csv")
    assert str(gone.value) == f"cannot download {http_files}/gone.csv: HTTP Error 404: Not Found"
    assert gone.value.permanent is True
    with pytest.raises(datasets.DatasetError) as busy:
        datasets.load(f"{http_files}/busy.csv")
    assert busy.value.permanent is False
    refused = f"http://127.0.0.1:{free_port()}/d.csv"  # nothing listens: maybe later
    with pytest.raises(datasets.DatasetError, match=f"^cannot download {refused}: ") as nobody:
        datasets.load(refused)
    assert nobody.value.permanent is False


@pytest.mark.parametrize(
    ("source", "fmt"),
    [("a.csv", "csv"), ("a.TXT", "csv"), ("a.parquet", "parquet"), ("a.PQ", "parquet"),
     ("/runs/run#2/a.csv", "csv"), ("https://h/p/a.pq?sig=x.csv", "parquet")],
)
def test_file_formats_by_suffix(source, fmt):
    assert datasets.file_format(source) == fmt


def test_a_source_without_a_suffix_is_named():
    with pytest.raises(datasets.DatasetError) as info:
        datasets.file_format("/data/table")
    assert str(info.value) == "source '/data/table': unknown file type '(none)'; use .csv or .parquet"


@pytest.mark.parametrize(
    ("source", "name"),
    [("sklearn:wine", "wine"), ("/runs/run#2/house.csv", "house"), ("https://h/p/house.csv?sig=1.2", "house"),
     ("https://h/", "dataset")],
)
def test_dataset_names(source, name):
    assert datasets.dataset_name(source) == name


def test_an_unknown_sklearn_set_lists_the_choices():
    with pytest.raises(datasets.DatasetError) as info:
        datasets.load("sklearn:mnist")
    assert str(info.value) == (
        f"unknown scikit-learn dataset 'mnist'; choose one of {', '.join(datasets.SKLEARN_DATASETS)}")


def test_unparseable_bytes_name_the_source_and_format():
    with pytest.raises(datasets.DatasetError, match=r"^cannot parse 'x\.parquet' as parquet: "):
        datasets.parse_bytes(b"not parquet", "parquet", "x.parquet")
    with pytest.raises(datasets.DatasetError, match=r"^source 'x\.csv' has no columns: "):
        datasets.parse_bytes("\ufeff".encode(), "csv", "x.csv")  # a BOM and nothing else


@pytest.mark.parametrize("kind", ["int", "float"])
def test_twenty_distinct_whole_numbers_are_classes_twenty_one_are_not(kind):
    cast = float if kind == "float" else int
    assert datasets.infer_task(pd.Series([cast(i) for i in range(20)] * 2)) == "classification"
    assert datasets.infer_task(pd.Series([cast(i) for i in range(21)] * 2)) == "regression"
    assert datasets.infer_task(pd.Series([cast(i) for i in range(21)]), max_classes=21) == "classification"


def test_a_missing_file_is_permanent_and_a_silent_server_times_out(monkeypatch):
    with pytest.raises(datasets.DatasetError) as missing:
        datasets.load("/nonexistent/data.csv")
    assert missing.value.permanent is True and datasets.DatasetError("x").permanent is True
    import socket

    monkeypatch.setattr(datasets, "HTTP_TIMEOUT_SECONDS", 0.3)
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/d.csv"
        with pytest.raises(datasets.DatasetError, match="timed out") as slow:
            datasets.load(url)
    assert slow.value.permanent is False


def test_what_load_returns_names_the_source_and_digests_the_bytes(tmp_path):
    iris = datasets.load("sklearn:iris")
    assert (iris.source, iris.name, iris.task_hint) == ("sklearn:iris", "iris", "classification")
    assert iris.digest == datasets.content_digest(iris.frame.to_csv(index=False).encode())
    path = tmp_path / "d.csv"
    path.write_bytes(b"x,target\n1,a\n")
    loaded = datasets.load(str(path))
    digest = datasets.content_digest(path.read_bytes())
    assert (loaded.source, loaded.name, loaded.digest) == (str(path), "d", digest)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(datasets.DatasetError, match=f"^cannot parse '{tmp_path}/bad.parquet' as parquet: "):
        datasets.load(str(tmp_path / "bad.parquet"))


def test_mixed_object_labels_are_classes():
    assert datasets.infer_task(pd.Series([1, "a", 1, "b"], dtype=object)) == "classification"
