"""Dataset sources and content digests."""

from __future__ import annotations

import pandas as pd
import pytest

from mlship import datasets

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
