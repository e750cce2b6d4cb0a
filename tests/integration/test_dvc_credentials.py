"""A DVC source whose git repository and DVC remote want credentials: two local HTTP servers, one
serving the repository over git's dumb HTTP protocol, the other the DVC remote (DVC's http
layout), each answering 401 to a request without its own Authorization header.

The credentials come from $MLSHIP_SOURCE_HEADERS, keyed by host:port, never from the source string;
no error message shows them.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from testkit import DVC, basic_auth, git_dvc, local_http, make_dvc_repo

from mlship.ml import dvc_source
from mlship.ml.datasets import DatasetError

pytestmark = pytest.mark.integration

HEADERS_ENV = "MLSHIP_SOURCE_HEADERS"
V1 = b"x,y,target\n1.0,2,a\n2.0,3,b\n3.0,4,a\n"
V2 = V1 + b"4.0,5,b\n"
GIT_SECRET = "git-pass-7"  # noqa: S105 - a test's own
REMOTE_TOKEN = "Bearer remote-token-9"  # noqa: S105 - a test's own


GIT_AUTH = basic_auth("reader", GIT_SECRET)


def guarded(directory: Path, authorization: str) -> type[SimpleHTTPRequestHandler]:
    """Static files of `directory`, 401 to any request without `authorization`."""

    class Guarded(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

        def send_head(self):  # type: ignore[no-untyped-def]
            if self.headers.get("Authorization") != authorization:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return super().send_head()

        def log_message(self, *args: object) -> None:
            pass

    return Guarded


@dataclass
class Served:
    git: str  # http://127.0.0.1:PORT
    remote: str
    commits: dict[str, str]

    @property
    def repo(self) -> str:
        return f"{self.git}/repo.git"

    def headers(self, git: str | None = GIT_AUTH, remote: str | None = REMOTE_TOKEN) -> str:
        table = {}
        if git is not None:
            table[self.git.removeprefix("http://")] = {"Authorization": git}
        if remote is not None:
            table[self.remote.removeprefix("http://")] = {"Authorization": remote}
        return json.dumps(table)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """houses.csv at tags v1 and v2 of a repository served over dumb HTTP behind Basic auth, its
    DVC remote on another port behind a bearer token."""
    base = tmp_path_factory.mktemp("dvc-credentials")
    repo = make_dvc_repo(base, "houses.csv", {"v1": V1, "v2": V2}, "integration")
    remote_dir, git_dir = base / "remote-site", base / "git-site"
    shutil.copytree(base / "store", remote_dir / "store")
    with (local_http(guarded(remote_dir, REMOTE_TOKEN)) as remote,
          local_http(guarded(git_dir, GIT_AUTH)) as git):
        git_dvc(repo, DVC, "remote", "add", "-f", "-d", "store", f"{remote}/store")
        git_dvc(repo, "git", "commit", "-qam", "the http remote")
        git_dvc(repo, "git", "tag", "-f", "v2")
        git_dvc(repo, "git", "checkout", "-q", "v1")
        git_dvc(repo, DVC, "remote", "add", "-f", "-d", "store", f"{remote}/store")
        git_dvc(repo, "git", "commit", "-qam", "the http remote at v1")
        git_dvc(repo, "git", "tag", "-f", "v1")
        git_dvc(repo, "git", "checkout", "-q", "main")
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(git_dir / "repo.git")], check=True)
        git_dvc(git_dir / "repo.git", "git", "update-server-info")
        commits = {t: git_dvc(repo, "git", "rev-parse", f"{t}^{{commit}}") for t in ("v1", "v2")}
        yield Served(git, remote, commits)


def read(served: Served, tag: str) -> dvc_source.DvcFile:
    return dvc_source.read(dvc_source.parse_source(f"dvc:{served.repo}#houses.csv@{tag}"))


def test_with_the_hosts_headers_the_file_is_read_at_each_tag(served, monkeypatch):
    monkeypatch.setenv(HEADERS_ENV, served.headers())
    for tag, data in (("v1", V1), ("v2", V2)):
        file = read(served, tag)
        assert (file.data, file.commit) == (data, served.commits[tag])


def test_without_headers_the_git_server_401_is_one_clear_line(served, monkeypatch):
    monkeypatch.delenv(HEADERS_ENV, raising=False)
    with pytest.raises(DatasetError) as exc:
        read(served, "v1")
    host = served.git.removeprefix("http://")
    assert str(exc.value) == (
        f"cannot clone DVC repo {served.repo}: {host} answered 401 Unauthorized "
        f"(no or wrong Authorization for it in ${HEADERS_ENV})"
    )


def test_a_wrong_git_password_is_refused_and_never_shown(served, monkeypatch):
    monkeypatch.setenv(HEADERS_ENV, served.headers(git=basic_auth("reader", "wrong-pass-3")))
    with pytest.raises(DatasetError) as exc:
        read(served, "v2")
    assert "401 Unauthorized" in str(exc.value)
    assert "wrong-pass-3" not in str(exc.value) and "reader" not in str(exc.value)


def test_without_the_remotes_header_its_401_is_one_clear_line(served, monkeypatch):
    monkeypatch.setenv(HEADERS_ENV, served.headers(remote=None))
    with pytest.raises(DatasetError) as exc:
        read(served, "v1")
    message = str(exc.value)
    assert message == (
        f"cannot read houses.csv of DVC repo {served.repo}@{served.commits['v1'][:12]}: its DVC remote "
        f"answered 401 Unauthorized (no or wrong header for its host in ${HEADERS_ENV})"
    )
    assert GIT_SECRET not in message and "\n" not in message


def test_a_git_host_with_no_basic_authorization_is_refused_before_any_request(served, monkeypatch):
    monkeypatch.setenv(HEADERS_ENV, served.headers(git="Bearer t0ken"))
    with pytest.raises(DatasetError, match=r"takes only an `Authorization: Basic \.\.\.` header") as exc:
        read(served, "v1")
    assert "t0ken" not in str(exc.value)


def test_no_log_line_shows_a_credential(served, monkeypatch, capfd):
    """DVC logs the URL it clones (user info included) at debug level: even then, redacted."""
    monkeypatch.setenv(HEADERS_ENV, served.headers())
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    keep, dvc_logger = Keep(logging.DEBUG), logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(keep)
    try:
        read(served, "v1")
    finally:
        logging.getLogger().removeHandler(keep)
        dvc_logger.setLevel(level)
    out, err = capfd.readouterr()
    logged = "\n".join([*records, out, err])
    assert "Creating external repo http://***@127.0.0.1" in logged  # DVC did log the clone URL
    assert GIT_SECRET not in logged and "reader" not in logged and "remote-token-9" not in logged
