"""Airflow's API and UI on the installed release (tests/conftest.py: `release`) let in only the
admin with the password the install generated: production's auth manager (FAB), not the
development one, and no default password."""

from __future__ import annotations

import pytest
import requests
from devkit import port_forward
from e2e.kit import Release

pytestmark = [pytest.mark.security, pytest.mark.timeout(300)]

DEFAULT_PASSWORDS = ("admin", "airflow", "password", "")


def token_status(url: str, username: str, password: str) -> int:
    resp = requests.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=30)
    return resp.status_code


def test_only_the_generated_password_opens_airflow(release: Release) -> None:
    password = release.secret(release.name("airflow"))["admin-password"]
    assert len(password) >= 20 and password not in DEFAULT_PASSWORDS
    with port_forward(release.namespace, f"svc/{release.name('airflow-api-server')}", 8080) as url:
        refused = {p: token_status(url, "admin", p) for p in DEFAULT_PASSWORDS}
        refused.update({f"airflow/{p}": token_status(url, "airflow", p) for p in ("airflow", "admin")})
        assert all(status in (400, 401, 403) for status in refused.values()), refused
        # without a token the API answers nothing
        anonymous = requests.get(f"{url}/api/v2/dags", timeout=30)
        assert anonymous.status_code in (401, 403), (anonymous.status_code, anonymous.text[:300])
        assert token_status(url, "admin", password) == 201
        # the UI's login is the auth manager's form (the e2e tier's browser test signs in through it)
        page = requests.get(f"{url}/auth/login/", timeout=30)
        assert page.status_code == 200 and 'name="password"' in page.text, (page.status_code, page.text[:500])
