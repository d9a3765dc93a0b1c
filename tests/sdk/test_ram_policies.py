"""RAM users and policies as the official SDKs see them: what a denied call
reports (Tea's access_denied_detail), accounts that never reach each other,
and conditions on the caller's address."""

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from alibabacloud_onsmqtt20200420 import models
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import INSTANCE, OTHER_INSTANCE
from test_python_core_sdk import client as core_client, query as core_query
from test_tea_sdk import MODE_IDS, MODES, query, tea


def close(client, client_id="GID_x@@@nobody"):
    return client.close_connection(
        models.CloseConnectionRequest(client_id=client_id, instance_id=INSTANCE)
    ).body


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_read_only_user_reads_and_is_refused_close_with_the_detail(mqgate, mode):
    reader = tea(mqgate, mode, key="reader-key", secret="reader-secret")
    assert query(reader, "c").online_status is False
    with pytest.raises(ClientException) as raised:
        close(reader)
    e = raised.value
    assert (e.status_code, e.code) == (403, "Forbidden.RAM")
    detail = e.access_denied_detail
    assert detail["AuthAction"] == "mq:CloseConnection"
    assert detail["NoPermissionType"] == "ImplicitDeny"
    assert detail["AuthPrincipalType"] == "SubUser"
    assert detail["AuthPrincipalOwnerId"] == "1234567890"
    assert detail["AuthPrincipalDisplayName"] == "reader"
    assert detail["PolicyType"] == "AccountLevelIdentityBasedPolicy"
    assert detail["EncodedDiagnosticMessage"]


def test_an_explicit_deny_says_so(mqgate):
    operator = tea(mqgate, None, key="operator-key", secret="operator-secret")
    assert query(operator, "c").online_status is False
    with pytest.raises(ClientException) as raised:
        close(operator)
    assert raised.value.access_denied_detail["NoPermissionType"] == "ExplicitDeny"
    assert "ExampleAllButCloseConnection" in raised.value.message


def test_the_old_python_sdk_sees_forbidden_ram(mqgate):
    with pytest.raises(ServerException) as raised:
        core_query(mqgate, "c", acs=core_client(mqgate, key="elsewhere-key", secret="elsewhere-secret"))
    assert raised.value.get_error_code() == "Forbidden.RAM"
    assert raised.value.get_http_status() == 403


def test_full_access_never_reaches_another_accounts_instance(mqgate):
    operator = tea(mqgate, None, key="operator-key", secret="operator-secret")
    with pytest.raises(ClientException) as raised:
        query(operator, "c", instance=OTHER_INSTANCE)
    assert (raised.value.status_code, raised.value.code) == (400, "InstancePermissionCheckFailed")


def test_source_ip_conditions(mqgate):
    office = tea(mqgate, None, key="office-key", secret="office-secret")
    assert query(office, "c").online_status is False  # allowed from 127.0.0.1
    elsewhere = tea(mqgate, None, key="elsewhere-key", secret="elsewhere-secret")
    with pytest.raises(ClientException) as raised:
        query(elsewhere, "c")
    assert raised.value.code == "Forbidden.RAM"
    assert raised.value.access_denied_detail["NoPermissionType"] == "ImplicitDeny"
