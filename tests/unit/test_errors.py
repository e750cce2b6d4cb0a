"""Error messages say their cause first, so clipping them never cuts it off."""

from __future__ import annotations

import socket

import pytest

from mlship.errors import BadInput, Explained, clip, describe, root_cause

pytestmark = pytest.mark.unit

HOST_ERROR = (
    "HTTPConnection(host='no-such-host.invalid', port=5000): Failed to resolve "
    "'no-such-host.invalid' ([Errno -2] Name or service not known)"
)


class NameResolutionError(Exception):
    pass


def mlflow_like_error() -> Exception:
    """The chain MLflow's client raises for an unknown host: the cause ~300 characters in."""
    try:
        try:
            try:
                raise socket.gaierror(-2, "Name or service not known")
            except OSError as gai:
                raise NameResolutionError(HOST_ERROR) from gai
        except NameResolutionError as dns:
            raise ConnectionError(
                "HTTPConnectionPool(host='no-such-host.invalid', port=5000): Max retries exceeded"
                " with url: /api/2.0/mlflow/registered-models/alias?name=iris&alias=champion"
                f' (Caused by NameResolutionError("{HOST_ERROR}"))'
            ) from dns
    except ConnectionError as conn:
        try:
            raise RuntimeError(
                "API request to http://no-such-host.invalid:5000/api/2.0/mlflow/registered-models/"
                f"alias failed with exception {conn}"
            ) from conn
        except RuntimeError as outer:
            return outer
    raise AssertionError("unreachable")


def test_clip() -> None:
    assert clip("a  b\n c", 10) == "a b c"
    assert clip("x" * 10, 10) == "x" * 10
    assert clip("x" * 11, 10) == "x" * 9 + "…"


def test_the_host_that_did_not_resolve_comes_first_and_survives_the_clip() -> None:
    err = mlflow_like_error()
    assert isinstance(root_cause(err), NameResolutionError)  # not the bare gaierror inside it
    said = describe(err, 300)
    assert said.startswith(
        "NameResolutionError: Failed to resolve 'no-such-host.invalid' ([Errno -2] Name or service"
        " not known); API request to http://no-such-host.invalid:5000/"
    )
    assert len(said) == 300 and said.endswith("…")
    assert clip(str(err), 300).find("Failed to resolve") == -1  # what the old clip showed


def test_an_error_without_a_chain_is_its_type_and_message() -> None:
    assert describe(KeyError("petal_len")) == "KeyError: 'petal_len'"
    assert describe(ValueError()) == "ValueError"


def test_our_own_messages_are_already_explained() -> None:
    try:
        try:
            raise OSError("disk on fire")
        except OSError as e:
            raise BadInput("the CSV cannot be read: disk on fire") from e
    except BadInput as err:
        assert describe(err) == "the CSV cannot be read: disk on fire"
    assert isinstance(BadInput("x"), Explained) and BadInput.permanent
    assert not Explained.permanent


def test_a_bare_os_error_is_kept_when_its_wrapper_does_not_repeat_it() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as e:
            raise RuntimeError("request failed") from e
    except RuntimeError as err:
        assert describe(err) == "ConnectionRefusedError: [Errno 111] Connection refused; request failed"
