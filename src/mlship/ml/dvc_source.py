"""DVC sources: a CSV/Parquet file tracked by DVC in a git repo, read through DVC's own API.

    dvc:<repo>#<path>[@<rev>]

`repo` is a git URL or a local path, `path` the file within the repo (its .dvc file tracks it),
`rev` any git revision (branch, tag, commit); left out, the repo's HEAD (a clone's default
branch). The revision is resolved to a commit first and the file read at that commit, so the
lineage names exactly what was read: the repo, the commit, the path, and DVC's md5 of the file
(from its .dvc entry) next to our digest of the bytes.

Credentials come from names.SOURCE_HEADERS_ENV (mlship.ml.json_source.headers_for: keyed by
host), never from the source string, which is logged and tagged:

- the git repository over http(s): its host's `Authorization: Basic ...` header, given to git as
  the URL's user info (the one form both of DVC's git backends take: dulwich, which clones, and
  libgit2, which fetches DVC's experiment refs); any other header of that host is not for git;
- an http(s) DVC remote: its host's `Authorization` header, else its one header, as DVC's
  `auth: custom` remote setting (DVC sends one header per remote; a host with several headers
  and no Authorization is refused);
- cloud remotes (S3, GCS, Azure): their own environment variables (AWS_ACCESS_KEY_ID, ...), which
  the chart's pipeline.sourceCredentialsSecret puts in the source steps' pods.

No message of this module shows a credential: URLs are redacted (`redact`) before they are shown.

The `dvc` package (the `dvc` extra) is imported only when a DVC source is read.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse, urlsplit, urlunsplit

from mlship import names
from mlship.errors import root_cause
from mlship.ml import json_source
from mlship.ml.datasets import DatasetError

PREFIX = "dvc:"
SYNTAX = "dvc:<repo>#<path>[@<rev>]"


@dataclass(frozen=True)
class DvcSource:
    repo: str
    path: str
    rev: str | None  # None: the repo's HEAD


@dataclass(frozen=True)
class DvcFile:
    data: bytes
    commit: str
    md5: str


def is_dvc_source(source: str) -> bool:
    return source.startswith(PREFIX)


def parse_source(source: str) -> DvcSource:
    if not is_dvc_source(source):
        raise DatasetError(f"DVC source {source!r}: must look like {SYNTAX}")
    repo, hash_, rest = source[len(PREFIX):].rpartition("#")
    path, at, rev = rest.rpartition("@") if "@" in rest else (rest, "", "")
    repo, path, rev = repo.strip(), path.strip().lstrip("/"), rev.strip()
    if not hash_ or not repo or not path:
        raise DatasetError(f"DVC source {source!r}: must look like {SYNTAX}")
    if at and not rev:
        raise DatasetError(f"DVC source {source!r}: empty revision after '@'; leave '@' out for HEAD")
    if urlsplit(repo).scheme in ("http", "https") and "@" in urlsplit(repo).netloc:
        raise DatasetError(
            f"DVC source {redact(source)!r}: no credentials in the source (it is logged and tagged); "
            f"give the repo's host an Authorization header in ${names.SOURCE_HEADERS_ENV}"
        )
    return DvcSource(repo, path, rev or None)


def is_local(repo: str) -> bool:
    """A path on this machine, not a URL (scp-like git@host:path included)."""
    if repo.startswith("file://"):
        return True
    return not urlparse(repo).scheme and not ("@" in repo.split("/")[0] and ":" in repo)


_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s'\"]*@")
AUTHORIZATION = "authorization"


def redact(text: str) -> str:
    """`text` with the user info of every URL in it (user:password@) replaced by ***@."""
    return _USERINFO.sub(r"\1***@", text)


def _host(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    return host if port is None else f"{host}:{port}"


def _authorization(headers: Mapping[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.strip().lower() == AUTHORIZATION), None)


def git_url(repo: str, headers: Mapping[str, str]) -> str:
    """The URL DVC clones `repo` from: with the user info of its host's `Authorization: Basic`
    header when it has one; `repo` itself when the host has no headers or `repo` is no http(s) URL.
    Errors name the host, never a header's value."""
    parts = urlsplit(repo)
    if parts.scheme not in ("http", "https") or not headers:
        return repo
    value = _authorization(headers)
    scheme, _, token = (value or "").strip().partition(" ")
    if scheme.lower() != "basic":
        raise DatasetError(
            f"DVC repo {redact(repo)}: git over {parts.scheme} takes only an `Authorization: Basic "
            f"...` header of {_host(repo)} from ${names.SOURCE_HEADERS_ENV}, and it has none"
        )
    try:
        user, colon, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user, colon, password = "", "", ""
    if not colon:
        raise DatasetError(
            f"DVC repo {redact(repo)}: the Authorization header of {_host(repo)} in "
            f"${names.SOURCE_HEADERS_ENV} is not Basic base64(user:password)"
        )
    netloc = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return urlunsplit(parts._replace(netloc=userinfo + netloc))


def remote_auth(url: str, headers: Mapping[str, str]) -> dict[str, str] | None:
    """DVC's remote settings that send an http(s) remote's header: its host's Authorization, else
    its only header; None when its host has none. Errors name the host, never a value."""
    if urlsplit(url).scheme not in ("http", "https") or not headers:
        return None
    value = _authorization(headers)
    if value is not None:
        return {"auth": "custom", "custom_auth_header": "Authorization", "password": value}
    if len(headers) > 1:
        raise DatasetError(
            f"DVC remote {redact(url)}: DVC sends one header to an http remote; "
            f"${names.SOURCE_HEADERS_ENV} gives {_host(url)} {len(headers)} ({', '.join(sorted(headers))}) "
            "and no Authorization"
        )
    ((name, value),) = headers.items()
    return {"auth": "custom", "custom_auth_header": name, "password": value}


def remotes_auth(remotes: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The `remote` section of DVC's config that adds to each of a repo's remotes (its config's
    "remote": {name: {"url": ...}}) the header its host has in names.SOURCE_HEADERS_ENV."""
    out: dict[str, Any] = {}
    for name, conf in remotes.items():
        url = str((conf or {}).get("url", ""))
        auth = remote_auth(url, json_source.headers_for(url, environ))
        if auth is not None:
            out[name] = auth
    return out


def _unauthorized(cause: BaseException) -> bool:
    status = getattr(cause, "status", None) or getattr(cause, "code", None)
    return type(cause).__name__ == "HTTPUnauthorized" or status in (401, 403)


def remote_refuses(url: str, md5: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether an http(s) DVC remote answers 401/403 to the file's object (files/md5/xx/...)
    asked with the headers its host has: DVC itself reports only "No storage files available"."""
    import urllib.error
    import urllib.request

    if urlsplit(url).scheme not in ("http", "https") or len(md5) < 3:
        return False
    target = f"{url.rstrip('/')}/files/md5/{md5[:2]}/{md5[2:]}"
    auth = remote_auth(url, json_source.headers_for(url, environ)) or {}
    headers = {auth["custom_auth_header"]: auth["password"]} if auth else {}
    request = urllib.request.Request(target, headers=headers, method="HEAD")  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - http(s) only
            return False
    except urllib.error.HTTPError as exc:
        return exc.code in (401, 403)
    except (OSError, ValueError):
        return False


class _Redact(logging.Filter):
    """Redacts URLs' user info in every record a handler emits (DVC logs the URL it clones, user
    info included, at debug level)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = redact(message)
        if shown != message:
            record.msg, record.args = shown, None
        return True


@contextmanager
def _redacted_logs() -> Iterator[None]:
    """`_Redact` on every logging handler there is (the root's, DVC's, the last resort) while a
    DVC source is read."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers}
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    redacting = _Redact()
    for handler in handlers:
        handler.addFilter(redacting)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redacting)


def read(spec: DvcSource) -> DvcFile:
    """`_read` with URLs' user info redacted from all logging; then DVC's temporary clones are
    removed: their .git/config holds the clone URL, user info included, and a later read of the
    same repo starts afresh (DVC would update a kept clone with a fetch through libgit2, which has
    no dumb-HTTP support)."""
    try:
        import dvc  # noqa: F401 - its import adds its log handlers: redact theirs too
    except ImportError:
        pass
    try:
        with _redacted_logs():
            return _read(spec)
    finally:
        try:
            from dvc.repo.open_repo import clean_repos
        except ImportError:
            pass
        else:
            clean_repos()


def _read(spec: DvcSource) -> DvcFile:
    """The file's bytes at the revision's commit, with the commit and DVC's md5 of the file.

    Errors: an unknown revision, a path that is not there or not tracked by DVC, and a repo that
    is no git repo are permanent; a repo that cannot be cloned or a DVC remote that cannot be read
    may answer later.
    """
    try:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo
        from dvc.scm import CloneError, NoSCMError, RevError, SCMError
    except ImportError as exc:
        raise DatasetError(f"DVC sources need the dvc package: pip install 'mlship[dvc]' ({exc})") from exc

    if is_local(spec.repo) and not Path(spec.repo.removeprefix("file://")).exists():
        raise DatasetError(f"DVC repo not found: {spec.repo}")
    os.environ.setdefault("GIT_TERMINAL_PROMPT", "0")  # a wrong password fails; nothing prompts
    url = git_url(spec.repo, {} if is_local(spec.repo) else json_source.headers_for(spec.repo))
    shown = redact(spec.repo)
    try:
        with Repo.open(url, rev=spec.rev, subrepos=True, uninitialized=True) as repo:
            commit = str(repo.scm.resolve_rev(spec.rev or "HEAD"))
            configured = repo.config.get("remote") or {}
            remotes = {n: str((c or {}).get("url", "")) for n, c in configured.items()}
            auth = remotes_auth(configured)
    except RevError as exc:
        raise DatasetError(f"DVC repo {spec.repo}: unknown revision {spec.rev!r}") from exc
    except NoSCMError as exc:
        raise DatasetError(f"DVC repo {spec.repo}: not a git repository") from exc
    except (CloneError, SCMError) as exc:
        cause = root_cause(exc)
        if _unauthorized(cause):
            raise DatasetError(
                f"cannot clone DVC repo {shown}: {_host(spec.repo)} answered 401 Unauthorized "
                f"(no or wrong Authorization for it in ${names.SOURCE_HEADERS_ENV})"
            ) from None
        permanent = type(cause).__name__ == "NotGitRepository"
        raise DatasetError(
            f"cannot {'clone' if isinstance(exc, CloneError) else 'fetch'} DVC repo {shown}: "
            f"{type(cause).__name__}: {redact(str(cause))}",
            permanent=permanent,
        ) from None
    at = f"{shown}@{commit[:12]}"
    config = {"remote": auth} if auth else None
    with Repo.open(url, rev=commit, subrepos=True, uninitialized=True, config=config) as repo:
        fs = repo.dvcfs
        try:
            info: dict[str, Any] = fs.info(spec.path)
        except FileNotFoundError as exc:
            raise DatasetError(f"{spec.path} is not in DVC repo {at}") from exc
        dvc_info = info.get("dvc_info") or {}
        md5 = dvc_info.get("md5")
        if info.get("type") != "file":
            raise DatasetError(f"{spec.path} in DVC repo {at} is a directory; name a .csv or .parquet file")
        if not md5:
            raise DatasetError(
                f"{spec.path} in DVC repo {at} is not tracked by DVC (a plain git file); `dvc add` it"
            )
        try:
            with fs.open(spec.path, "rb") as f:
                data: bytes = f.read()
        except (OSError, DvcException) as exc:
            cause = root_cause(exc)
            if _unauthorized(cause) or any(remote_refuses(u, str(md5)) for u in remotes.values()):
                raise DatasetError(
                    f"cannot read {spec.path} of DVC repo {at}: its DVC remote answered 401 "
                    f"Unauthorized (no or wrong header for its host in ${names.SOURCE_HEADERS_ENV})"
                ) from None
            raise DatasetError(
                f"cannot read {spec.path} of DVC repo {at} from its DVC remote (not pushed, or the "
                f"remote unreachable): {type(exc).__name__}: {redact(str(exc))}",
                permanent=False,
            ) from exc
    return DvcFile(data, commit, str(md5))


def lineage(spec: DvcSource, file: DvcFile) -> dict[str, str]:
    """MLflow tags naming what was read, beside the dataset digest."""
    return {
        names.TAG_DATASET_REPO: spec.repo,
        names.TAG_DATASET_PATH: spec.path,
        names.TAG_DATASET_COMMIT: file.commit,
        names.TAG_DATASET_DVC_MD5: file.md5,
    }
