"""DVC sources: a CSV/Parquet file tracked by DVC in a git repo, read through DVC's own API.

    dvc:<repo>#<path>[@<rev>]

`repo` is a git URL or a local path, `path` the file within the repo (its .dvc file tracks it),
`rev` any git revision (branch, tag, commit); left out, the repo's HEAD (a clone's default
branch). The revision is resolved to a commit first and the file read at that commit, so the
lineage names exactly what was read: the repo, the commit, the path, and DVC's md5 of the file
(from its .dvc entry) next to our digest of the bytes.

The `dvc` package (the `dvc` extra) is imported only when a DVC source is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlship import names
from mlship.errors import root_cause
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
    return DvcSource(repo, path, rev or None)


def is_local(repo: str) -> bool:
    """A path on this machine, not a URL (scp-like git@host:path included)."""
    if repo.startswith("file://"):
        return True
    return not urlparse(repo).scheme and not ("@" in repo.split("/")[0] and ":" in repo)


def read(spec: DvcSource) -> DvcFile:
    """The file's bytes at the revision's commit, with the commit and DVC's md5 of the file.

    Errors: an unknown revision, a path that is not there or not tracked by DVC, and a repo that
    is no git repo are permanent; a repo that cannot be cloned or a DVC remote that cannot be read
    may answer later.
    """
    try:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo
        from dvc.scm import CloneError, NoSCMError, RevError
    except ImportError as exc:
        raise DatasetError(f"DVC sources need the dvc package: pip install 'mlship[dvc]' ({exc})") from exc

    if is_local(spec.repo) and not Path(spec.repo.removeprefix("file://")).exists():
        raise DatasetError(f"DVC repo not found: {spec.repo}")
    try:
        with Repo.open(spec.repo, rev=spec.rev, subrepos=True, uninitialized=True) as repo:
            commit = str(repo.scm.resolve_rev(spec.rev or "HEAD"))
    except RevError as exc:
        raise DatasetError(f"DVC repo {spec.repo}: unknown revision {spec.rev!r}") from exc
    except NoSCMError as exc:
        raise DatasetError(f"DVC repo {spec.repo}: not a git repository") from exc
    except CloneError as exc:
        cause = root_cause(exc)
        permanent = type(cause).__name__ == "NotGitRepository"
        raise DatasetError(
            f"cannot clone DVC repo {spec.repo}: {type(cause).__name__}: {cause}", permanent=permanent
        ) from exc
    at = f"{spec.repo}@{commit[:12]}"
    with Repo.open(spec.repo, rev=commit, subrepos=True, uninitialized=True) as repo:
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
            raise DatasetError(
                f"cannot read {spec.path} of DVC repo {at} from its DVC remote (not pushed, or the "
                f"remote unreachable): {type(exc).__name__}: {exc}",
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
