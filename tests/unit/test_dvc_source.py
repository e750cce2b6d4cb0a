"""DVC sources: the source string, and reading a real git + DVC repo made here (a local-directory
DVC remote, nothing from the network)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from testkit import basic_auth, git_dvc, make_dvc_repo

from mlship import names
from mlship.ml import datasets
from mlship.ml import dvc_source as ds
from mlship.ml.dvc_source import DvcSource

pytestmark = pytest.mark.unit

V1 = b"x,target\n1,a\n2,b\n3,a\n"
V2 = b"x,target\n1,a\n2,b\n4,b\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repo, branch main: data/d.csv tracked by DVC (tag v1: V1, HEAD: V2), pushed to a
    local-directory remote and not in the repo's cache; plain.csv tracked by git alone."""
    root = make_dvc_repo(tmp_path_factory.mktemp("dvc"), "data/d.csv", {"v1": V1, "v2": V2}, "unit")
    (root / "plain.csv").write_bytes(V1)
    git_dvc(root, "git", "add", "plain.csv")
    git_dvc(root, "git", "commit", "-qm", "plain")
    return root


def rev(repo: Path, name: str) -> str:
    return git_dvc(repo, "git", "rev-parse", f"{name}^{{commit}}")


# ------------------------------------------------------------------------------- the source string

@pytest.mark.parametrize(
    ("source", "spec"),
    [
        ("dvc:https://github.com/org/data.git#data/houses.csv@v1.2",
         DvcSource("https://github.com/org/data.git", "data/houses.csv", "v1.2")),
        ("dvc:/srv/repos/data#houses.parquet", DvcSource("/srv/repos/data", "houses.parquet", None)),
        ("dvc:git@github.com:org/data.git#/d.csv@abc123",
         DvcSource("git@github.com:org/data.git", "d.csv", "abc123")),
        ("dvc:./repo#a@b/d.csv@main", DvcSource("./repo", "a@b/d.csv", "main")),
    ],
)
def test_a_source_string_says_repo_path_and_revision(source, spec):
    assert ds.parse_source(source) == spec
    assert datasets.source_kind(source) == "dvc"


SYNTAX = "must look like dvc:<repo>#<path>[@<rev>]"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("dvc:/srv/repo", f"DVC source 'dvc:/srv/repo': {SYNTAX}"),
        ("dvc:#d.csv", f"DVC source 'dvc:#d.csv': {SYNTAX}"),
        ("dvc:/srv/repo#@v1", f"DVC source 'dvc:/srv/repo#@v1': {SYNTAX}"),
        ("dvc:/srv/repo#d.csv@",
         "DVC source 'dvc:/srv/repo#d.csv@': empty revision after '@'; leave '@' out for HEAD"),
    ],
)
def test_a_bad_source_string_is_named(source, message):
    with pytest.raises(datasets.DatasetError) as info:
        ds.parse_source(source)
    assert str(info.value) == message and info.value.permanent is True


def test_names_and_formats_come_from_the_path():
    assert datasets.dataset_name("dvc:https://h/org/data.git#data/houses.csv@v1") == "houses"
    assert datasets.dataset_name("dvc:/srv/repo#houses.parquet") == "houses"
    with pytest.raises(datasets.DatasetError, match=r"unknown file type '\.json'"):
        datasets.load("dvc:/srv/repo#houses.json@v1")


@pytest.mark.parametrize(
    ("repo", "local"),
    [("/srv/repo", True), ("./repo", True), ("file:///srv/repo", True), ("https://h/r.git", False),
     ("ssh://git@h/r.git", False), ("git@github.com:org/r.git", False)],
)
def test_local_repos_are_paths(repo, local):
    assert ds.is_local(repo) is local


def test_without_the_dvc_package_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "dvc.repo", None)  # import dvc.repo raises ImportError
    with pytest.raises(datasets.DatasetError) as info:
        ds.read(DvcSource("/srv/repo", "d.csv", None))
    assert str(info.value).startswith("DVC sources need the dvc package: pip install 'mlship[dvc]' (")
    assert info.value.permanent is True


# --------------------------------------------------------------------------------- a real repo

def test_each_revision_is_read_at_its_commit_with_dvcs_md5(repo):
    one = datasets.load(f"dvc:{repo}#data/d.csv@v1")
    head = datasets.load(f"dvc:{repo}#data/d.csv")
    assert one.digest == datasets.content_digest(V1) and head.digest == datasets.content_digest(V2)
    assert one.name == "d" and len(one.frame) == 3 and one.task_hint is None
    assert one.lineage == {
        names.TAG_DATASET_REPO: str(repo), names.TAG_DATASET_PATH: "data/d.csv",
        names.TAG_DATASET_COMMIT: rev(repo, "v1"),
        names.TAG_DATASET_DVC_MD5: hashlib.md5(V1, usedforsecurity=False).hexdigest(),
    }
    assert head.lineage[names.TAG_DATASET_COMMIT] == rev(repo, "HEAD")
    assert head.lineage[names.TAG_DATASET_DVC_MD5] == hashlib.md5(V2, usedforsecurity=False).hexdigest()
    by_sha = datasets.load(f"dvc:{repo}#data/d.csv@{rev(repo, 'v1')[:8]}")
    assert by_sha.digest == one.digest and by_sha.lineage == one.lineage


def test_head_is_the_commit_not_the_work_tree(repo):
    (repo / "data" / "d.csv").write_bytes(b"x,target\n9,z\n")  # not added, not committed
    try:
        assert datasets.load(f"dvc:{repo}#data/d.csv").digest == datasets.content_digest(V2)
    finally:
        (repo / "data" / "d.csv").write_bytes(V2)


def error(source: str) -> datasets.DatasetError:
    with pytest.raises(datasets.DatasetError) as info:
        datasets.load(source)
    return info.value


def test_what_cannot_be_read_is_named(repo, tmp_path):
    at = f"{repo}@{rev(repo, 'HEAD')[:12]}"
    cases = {
        f"dvc:{repo}#data/d.csv@nope": (f"DVC repo {repo}: unknown revision 'nope'", True),
        f"dvc:{repo}#data/other.csv": (f"data/other.csv is not in DVC repo {at}", True),
        f"dvc:{repo}#plain.csv": (
            f"plain.csv in DVC repo {at} is not tracked by DVC (a plain git file); `dvc add` it", True),
        f"dvc:{tmp_path}/none#d.csv": (f"DVC repo not found: {tmp_path}/none", True),
    }
    for source, (message, permanent) in cases.items():
        exc = error(source)
        assert (str(exc), exc.permanent) == (message, permanent), source
    (tmp_path / "nogit").mkdir()
    exc = error(f"dvc:{tmp_path}/nogit#d.csv")
    assert (str(exc), exc.permanent) == (f"DVC repo {tmp_path}/nogit: not a git repository", True)


def test_a_repo_that_cannot_be_cloned_may_answer_later():
    exc = error("dvc:https://127.0.0.1:1/org/data.git#d.csv")  # nothing listens there
    assert str(exc).startswith("cannot clone DVC repo https://127.0.0.1:1/org/data.git: ")
    assert exc.permanent is False


def test_a_remote_that_cannot_be_read_may_answer_later(repo):
    store = repo.parent / "store"
    store.rename(repo.parent / "store.off")
    try:
        exc = error(f"dvc:{repo}#data/d.csv@v1")
    finally:
        (repo.parent / "store.off").rename(store)
    at = f"{repo}@{rev(repo, 'v1')[:12]}"
    assert str(exc).startswith(
        f"cannot read data/d.csv of DVC repo {at} from its DVC remote "
        "(not pushed, or the remote unreachable): ")
    assert exc.permanent is False


# ----------------------------------------------------------------------------------- credentials

@pytest.mark.parametrize(("text", "shown"), [
    ("https://u:p@git.example.com/r.git", "https://***@git.example.com/r.git"),
    ("Git failed to fetch ref from 'http://x-token:s3cr%2Ft@h:8080/r'", "Git failed to fetch ref from 'http://***@h:8080/r'"),
    ("no url here, a@b", "no url here, a@b"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),
])
def test_redact_removes_user_info_of_urls(text, shown):
    assert ds.redact(text) == shown


def test_git_url_gets_the_hosts_basic_credentials_as_user_info():
    headers = {"authorization": basic_auth("x-access-token", "p@ss:w/rd"), "X-Api-Key": "k"}
    assert ds.git_url("https://old@git.example.com/o/r.git", headers) == (
        "https://x-access-token:p%40ss%3Aw%2Frd@git.example.com/o/r.git")
    assert ds.git_url("https://git.example.com/o/r.git", {}) == "https://git.example.com/o/r.git"
    assert ds.git_url("/data/repo", headers) == "/data/repo"


@pytest.mark.parametrize(("headers", "message"), [
    ({"X-Api-Key": "v4lue"}, "takes only an `Authorization: Basic ...` header of git.example.com"),
    ({"Authorization": "Bearer v4lue"}, "takes only an `Authorization: Basic ...` header"),
    ({"Authorization": "Basic v4lue"}, "is not Basic base64(user:password)"),
])
def test_git_url_refuses_other_credentials_without_showing_them(headers, message):
    with pytest.raises(datasets.DatasetError) as exc:
        ds.git_url("https://git.example.com/o/r.git", headers)
    assert message in str(exc.value) and "v4lue" not in str(exc.value)


def test_remote_auth_sends_authorization_else_the_one_header():
    url = "https://dvc.example.com/store"
    assert ds.remote_auth(url, {"Authorization": "Bearer t", "X-Other": "o"}) == {
        "auth": "custom", "custom_auth_header": "Authorization", "password": "Bearer t"}
    assert ds.remote_auth(url, {"X-Api-Key": "k"}) == {
        "auth": "custom", "custom_auth_header": "X-Api-Key", "password": "k"}
    assert ds.remote_auth(url, {}) is None
    assert ds.remote_auth("s3://bucket/store", {"X-Api-Key": "k"}) is None
    with pytest.raises(datasets.DatasetError, match="DVC sends one header to an http remote") as exc:
        ds.remote_auth(url, {"X-A": "s3cret", "X-B": "s3cret"})
    assert "s3cret" not in str(exc.value)


def test_remotes_auth_keys_each_remote_by_its_host():
    env = {"MLSHIP_SOURCE_HEADERS": '{"dvc.example.com": {"Authorization": "Bearer t"}}'}
    remotes = {"a": {"url": "https://dvc.example.com/s"}, "b": {"url": "https://other.example.com/s"},
               "c": {"url": "s3://b/s"}}
    assert ds.remotes_auth(remotes, env) == {"a": {
        "auth": "custom", "custom_auth_header": "Authorization", "password": "Bearer t"}}


def test_logs_are_redacted_while_a_dvc_source_is_read():
    import logging

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    logger, keep = logging.getLogger("dvc.test-redact"), Keep()
    logger.addHandler(keep)
    logger.propagate = False
    try:
        with ds._redacted_logs():
            logger.warning("clone %s", "https://u:s3cret@git.example.com/r.git")
        logger.warning("after %s", "https://u:s3cret@git.example.com/r.git")  # the filter is gone
    finally:
        logger.removeHandler(keep)
    assert lines == ["clone https://***@git.example.com/r.git", "after https://u:s3cret@git.example.com/r.git"]


def test_credentials_in_the_source_are_refused_and_not_repeated():
    with pytest.raises(datasets.DatasetError) as exc:
        ds.parse_source("dvc:https://me:s3cret@git.example.com/r.git#data.csv@v1")
    assert str(exc.value) == (
        "DVC source 'dvc:https://***@git.example.com/r.git#data.csv@v1': no credentials in the source "
        "(it is logged and tagged); give the repo's host an Authorization header in $MLSHIP_SOURCE_HEADERS")
    assert ds.parse_source("dvc:ssh://git@git.example.com/r.git#d.csv").repo == "ssh://git@git.example.com/r.git"
