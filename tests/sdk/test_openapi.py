"""openapi/mqgate.yaml describes every HTTP endpoint: it validates as
OpenAPI 3, and schemathesis, run against a live mqgate with a real MQTT
client connected, finds no server error and no response that breaks it."""

import pathlib
import subprocess
import sys

import paho.mqtt.client as mqtt
import yaml
from openapi_spec_validator import validate

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET, INSTANCE

SPEC = pathlib.Path(__file__).resolve().parents[2] / "openapi" / "mqgate.yaml"


def test_the_document_is_valid_openapi():
    validate(yaml.safe_load(SPEC.read_text()))


def test_schemathesis_finds_no_server_error_and_no_schema_violation(mqgate, device_factory, tmp_path):
    device = device_factory("GID_st@@@dev", mqtt.MQTTv5)
    assert device.wait_connected() == 0
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[parameters]\n"path.InstanceId" = "{INSTANCE}"\n"path.clientid" = "GID_st@@@dev"\n'
    )
    schemathesis = pathlib.Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis), "--config-file", str(config), "run", str(SPEC),
            "--url", f"http://{mqgate.http_host}:{mqgate.http_port}",
            "--auth", f"{ACCESS_KEY_ID}:{ACCESS_KEY_SECRET}",
            "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,"
                        "content_type_conformance,response_headers_conformance",
            "--max-examples", "40",
            "--generation-deterministic",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    # e.g. "Test cases:\n  1002 generated, 1002 passed": every case generated passed.
    summary = report.split("Test cases:")[1].splitlines()[1]
    generated, passed = summary.split(",")
    assert int(generated.split()[0]) > 100, summary
    assert generated.split()[0] == passed.split()[0], summary
    assert "Tested: 12" in report, report
