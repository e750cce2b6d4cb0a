"""The DAG's default XCom sidecar image (mlship-base:dev) does the sidecar's job under the pods'
restrictions: it runs the provider's sidecar command as uid 10001 on a read-only root
filesystem, returns the step's result when the operator execs in, and exits 0 when told to.

The commands are those of apache-airflow-providers-cncf-kubernetes 10.25
(utils/xcom_sidecar.py PodDefaults, utils/pod_manager.py extract_xcom/extract_xcom_kill).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from devkit import WaitTimeout, wait_for
from testkit import require_or_skip

pytestmark = pytest.mark.images

IMAGE = "mlship-base:dev"
SIDECAR_COMMAND = ["sh", "-c", 'trap "exit 0" INT; while true; do sleep 1; done;']
READ = (
    "if [ -s /airflow/xcom/return.json ]; then cat /airflow/xcom/return.json; "
    "else echo __airflow_xcom_result_empty__; fi"
)
KILL = "kill -2 $(pgrep -u $(id -u) -f 'sh')"


def docker(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def sidecar(tmp_path):
    if shutil.which("docker") is None:
        require_or_skip("no `docker` command on PATH", "images")
    if docker("image", "inspect", IMAGE).returncode != 0:
        require_or_skip(f"{IMAGE} not built (or docker not usable): run hack/build-images base", "images")
    xcom = tmp_path / "xcom"
    xcom.mkdir()
    xcom.chmod(0o777)
    (xcom / "return.json").write_text(json.dumps({"model_uri": "models:/m-1"}))
    run = docker("run", "-d", "--user", "10001:10001", "--read-only", "--cap-drop", "ALL",
                 "--security-opt", "no-new-privileges",
                 "--mount", f"type=bind,source={xcom},target=/airflow/xcom", IMAGE, *SIDECAR_COMMAND)
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    try:
        try:
            wait_for(f"the sidecar container {cid[:12]} running",
                     lambda: docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true",
                     60, 0.2, retry=())
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}\n{docker('logs', cid).stderr}") from None
        yield cid
    finally:
        docker("rm", "-f", cid)


def test_base_image_serves_as_the_xcom_sidecar(sidecar):
    who = docker("exec", sidecar, "id", "-u")
    assert who.stdout.strip() == "10001"
    read = docker("exec", "-i", sidecar, "/bin/sh", stdin=READ + "\n")
    assert json.loads(read.stdout) == {"model_uri": "models:/m-1"}, read.stderr
    assert docker("exec", sidecar, "sh", "-c", "command -v pgrep").returncode == 0, (
        f"no pgrep in {IMAGE}: the provider cannot stop the sidecar (apt-get install procps)"
    )
    # exactly the provider's kill command, judged as the provider does (any stderr = failed):
    # in an image without pgrep it says "pgrep: not found" and the sidecar is left running
    kill = docker("exec", "-i", sidecar, "/bin/sh", stdin=KILL + "\n")
    assert kill.stderr == "", kill.stderr
    waited = docker("wait", sidecar)
    assert waited.stdout.strip() == "0", waited.stderr  # the trap's `exit 0`: the pod succeeds
