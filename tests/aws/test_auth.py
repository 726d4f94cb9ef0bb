"""Who may use the admin API: AWS Signature Version 4 with keygate-issued credentials, or a bearer
token. Everything else is refused with 403 and AWS's error; the traffic listener serves no admin
path at all.

AWS's refusals, as the control plane sends them:
  no credentials      403 {"message":"Missing Authentication Token"}   MissingAuthenticationTokenException
  bad signature       403 "The request signature we calculated does not match ..."  InvalidSignatureException
  stale X-Amz-Date    403 "Signature expired: ..."                       InvalidSignatureException
  future X-Amz-Date   403 "Signature not yet current: ..."               InvalidSignatureException
  unknown access key  403 "The security token included in the request is invalid."  UnrecognizedClientException
"""

import datetime as dt
import json

import pytest
from botocore.exceptions import ClientError

from conftest import (
    INVALID_TOKEN_MESSAGE,
    MISSING_TOKEN,
    assert_client_error,
    assert_missing_token,
    client_error,
    eventually,
    new_value,
    unique,
)

BAD_SIGNATURE_PREFIX = "The request signature we calculated does not match the signature you provided"


def _now():
    return dt.datetime.now(dt.timezone.utc)


def _refused(r, error_type):
    assert r.status == 403, str(r)
    assert r.error_type() == error_type, str(r)
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], str(r)
    assert "item" not in body
    return body["message"]


def _key_names(kg):
    r = kg.admin("GET", "/apikeys?limit=500")
    assert r.status == 200, str(r)
    return {i["name"] for i in r.json()["item"]}


# --------------------------------------------------------------------------------------------
# No credentials


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/apikeys"),
        ("GET", "/apikeys?includeValues=true"),
        ("GET", "/restapis"),
        ("GET", "/usageplans"),
        ("POST", "/apikeys"),
        ("PATCH", "/apikeys/anything"),
        ("DELETE", "/apikeys/anything"),
    ],
)
def test_unsigned_requests_are_refused(kg, method, path):
    body = {"patchOperations": []} if method == "PATCH" else ({"name": unique("unsigned")} if method == "POST" else None)
    r = kg.http(method, path, body=body)
    assert_missing_token(r)
    assert r.error_type() == "MissingAuthenticationTokenException", str(r)


def test_unsigned_create_creates_nothing(kg):
    name = unique("unsigned")
    assert_missing_token(kg.http("POST", "/apikeys", body={"name": name, "enabled": True}))
    assert name not in _key_names(kg)


def test_an_api_key_is_not_an_admin_credential(kg):
    r = kg.http("GET", "/apikeys", headers={"x-api-key": kg.api_key_value})
    assert_missing_token(r)
    # Nor is the admin listener a second traffic listener.
    r = kg.http("GET", f"/{kg.stage}/candidates", headers={"x-api-key": kg.api_key_value})
    assert r.status == 403, str(r)


# --------------------------------------------------------------------------------------------
# SigV4: good and bad signatures


def test_a_correct_signature_is_accepted(kg):
    r = kg.signed("GET", "/apikeys")
    assert r.status == 200, str(r)
    assert isinstance(r.json()["item"], list)
    # A little clock skew is fine (AWS allows 5 minutes).
    r = kg.signed("GET", "/apikeys", when=_now() - dt.timedelta(minutes=1))
    assert r.status == 200, str(r)


def test_wrong_secret_with_boto3(kg):
    client = kg.boto(secret_key=kg.creds["secretAccessKey"][:-4] + "abcd")
    e = client_error(client.get_api_keys)
    assert_client_error(e, "InvalidSignatureException", 403)
    assert e.response["Error"]["Message"].startswith(BAD_SIGNATURE_PREFIX), e


def test_wrong_secret_with_the_aws_cli(kg):
    creds = {"accessKeyId": kg.creds["accessKeyId"], "secretAccessKey": new_value(40)}
    err = kg.aws_error("get-api-keys", creds=creds)
    assert err.code == "InvalidSignatureException", err
    name = unique("wrongsecret")
    err = kg.aws_error("create-api-key", "--name", name, creds=creds)
    assert err.code == "InvalidSignatureException", err
    assert name not in _key_names(kg)


def test_unknown_access_key(kg):
    client = kg.boto(access_key="AKIA" + new_value(16).upper(), secret_key=new_value(40))
    e = client_error(client.get_api_keys)
    assert_client_error(e, "UnrecognizedClientException", 403)
    assert e.response["Error"]["Message"] == INVALID_TOKEN_MESSAGE


@pytest.mark.parametrize(
    "minutes,aws_message",
    [
        (-10, "Signature expired"),          # "Signature expired: X is now earlier than Y (Z - 5 min.)"
        (-60, "Signature expired"),
        (10, "Signature not yet current"),   # "Signature not yet current: X is still later than Y (Z + 5 min.)"
    ],
    ids=["10-min-old", "1-hour-old", "10-min-ahead"],
)
def test_stale_or_future_dated_signature_is_refused(kg, minutes, aws_message):
    """Correctly signed, but X-Amz-Date is outside AWS's 5-minute window."""
    r = kg.signed("GET", "/apikeys", when=_now() + dt.timedelta(minutes=minutes))
    message = _refused(r, "InvalidSignatureException")
    assert message.startswith(aws_message), message


def test_stale_signature_via_boto3_is_refused(kg):
    """The same through botocore's own request path: the client's clock runs 10 minutes late."""
    import botocore.auth
    from unittest import mock

    late = (_now() - dt.timedelta(minutes=10)).replace(tzinfo=None)
    client = kg.boto()
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda *a, **k: late):
        e = client_error(client.get_api_keys)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.response["Error"]["Code"] == "InvalidSignatureException"


def test_tampered_body_is_refused(kg):
    """The payload hash is part of the signature: another body with the same signature fails."""
    signed_name, sent_name = unique("signed"), unique("tampered")
    r = kg.signed(
        "POST",
        "/apikeys",
        body=json.dumps({"name": signed_name, "enabled": True}).encode(),
        headers={"Content-Type": "application/json"},
        send_body=json.dumps({"name": sent_name, "enabled": True}).encode(),
    )
    message = _refused(r, "InvalidSignatureException")
    assert message.startswith(BAD_SIGNATURE_PREFIX), message
    names = _key_names(kg)
    assert signed_name not in names and sent_name not in names

    # The untampered request works (the helper signs correctly).
    r = kg.signed("POST", "/apikeys", body=json.dumps({"name": signed_name, "enabled": True}).encode(),
                  headers={"Content-Type": "application/json"})
    assert r.status == 201, str(r)
    assert r.json()["name"] == signed_name


def test_tampered_query_or_path_is_refused(kg):
    r = kg.signed("GET", "/apikeys?customerId=alice", send_path="/apikeys?customerId=mallory")
    _refused(r, "InvalidSignatureException")
    r = kg.signed("GET", "/apikeys/aaaaaaaaaa", send_path="/apikeys/bbbbbbbbbb")
    _refused(r, "InvalidSignatureException")
    r = kg.signed("GET", "/apikeys", send_path="/usageplans")
    _refused(r, "InvalidSignatureException")


def test_malformed_authorization_header_is_refused(kg):
    for value in ("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256 Credential=x", "Basic dXNlcjpwYXNz", "Bearer"):
        r = kg.http("GET", "/apikeys", headers={"Authorization": value, "X-Amz-Date": _now().strftime("%Y%m%dT%H%M%SZ")})
        assert r.status == 403, f"{value!r}: {r}"
        assert "item" not in r.body


# --------------------------------------------------------------------------------------------
# Credentials lifecycle: create, list, revoke


def test_revoked_credentials_are_refused(kg):
    made = kg.keygate_json("admin", "credentials", "create", "--json")
    creds = {"accessKeyId": made["accessKeyId"], "secretAccessKey": made["secretAccessKey"]}
    assert creds["accessKeyId"] != kg.creds["accessKeyId"]
    client = kg.boto(creds["accessKeyId"], creds["secretAccessKey"])
    assert isinstance(client.get_api_keys()["items"], list)
    assert isinstance(kg.aws("get-api-keys", creds=creds)["items"], list)

    listed = kg.keygate("admin", "credentials", "list", "--json").stdout
    json.loads(listed)
    assert creds["accessKeyId"] in listed and kg.creds["accessKeyId"] in listed
    assert creds["secretAccessKey"] not in listed and kg.creds["secretAccessKey"] not in listed

    kg.keygate("admin", "credentials", "revoke", creds["accessKeyId"])

    errors = []

    def refused():
        try:
            client.get_api_keys()
        except ClientError as e:
            errors.append(e)
            return True
        return False

    eventually(refused, timeout=1.5, what="revoked credentials refused")
    e = errors[-1]
    assert_client_error(e, "UnrecognizedClientException", 403)
    assert e.response["Error"]["Message"] == INVALID_TOKEN_MESSAGE
    err = kg.aws_error("get-api-keys", creds=creds)
    assert err.code == "UnrecognizedClientException", err
    # The suite's own credentials are untouched.
    assert isinstance(kg.boto().get_api_keys()["items"], list)


# --------------------------------------------------------------------------------------------
# Bearer token


def test_bearer_token(kg):
    r = kg.admin("GET", "/apikeys")
    assert r.status == 200, str(r)
    assert (r.header("content-type") or "").startswith("application/json")
    body = r.json()
    assert isinstance(body["item"], list), body  # wire name `item` (the SDKs say `items`)
    assert kg.api_key_id in {i["id"] for i in body["item"]}
    assert all("value" not in i for i in body["item"])

    name = unique("bearer")
    r = kg.admin("POST", "/apikeys", body={"name": name, "description": "via curl", "enabled": True})
    assert r.status == 201, str(r)
    created = r.json()
    assert created["name"] == name and created["enabled"] is True
    assert len(created["value"]) == 40

    r = kg.admin("GET", f"/apikeys/{created['id']}?includeValue=true")
    assert r.status == 200, str(r)
    assert r.json()["name"] == name and "value" not in r.json()

    r = kg.admin("PATCH", f"/apikeys/{created['id']}",
                 body={"patchOperations": [{"op": "replace", "path": "/description", "value": "patched"}]})
    assert r.status == 200, str(r)
    assert r.json()["description"] == "patched"

    r = kg.admin("DELETE", f"/apikeys/{created['id']}")
    assert r.status == 202, str(r)

    r = kg.admin("GET", f"/apikeys/{created['id']}")
    assert r.status == 404, str(r)
    assert r.error_type() == "NotFoundException", str(r)
    assert isinstance(r.json().get("message"), str)


def test_bearer_token_wire_errors_have_aws_shape(kg):
    r = kg.admin("POST", "/apikeys", body={"name": unique("short"), "value": "tooshort"})
    assert r.status == 400, str(r)
    assert r.error_type() == "BadRequestException", str(r)
    assert isinstance(r.json().get("message"), str)
    assert r.header("x-amzn-requestid")


@pytest.mark.parametrize("token", ["wrong", "TOKEN+x", ""], ids=["wrong", "extended", "empty"])
def test_bad_bearer_token_is_refused(kg, token):
    value = kg.token + "x" if token == "TOKEN+x" else token
    r = kg.http("GET", "/apikeys", headers={"Authorization": f"Bearer {value}"})
    assert r.status == 403, str(r)
    assert "item" not in r.body


# --------------------------------------------------------------------------------------------
# The traffic listener is not the admin API


@pytest.mark.parametrize("path", ["/apikeys", "/restapis", "/usageplans", "/apikeys?includeValues=true", "STAGES", "/audit"])
@pytest.mark.parametrize("auth", ["none", "bearer", "sigv4"])
def test_traffic_listener_serves_no_admin_path(kg, path, auth):
    if path == "STAGES":
        path = f"/restapis/{kg.api_id}/stages"
    if auth == "none":
        r = kg.http("GET", path, base=kg.traffic_url)
    elif auth == "bearer":
        r = kg.http("GET", path, headers={"Authorization": f"Bearer {kg.token}"}, base=kg.traffic_url)
    else:
        r = kg.signed("GET", path, base=kg.traffic_url)
    assert_missing_token(r)
    assert r.json() == MISSING_TOKEN


def test_traffic_listener_does_not_create_keys(kg):
    name = unique("viatraffic")
    r = kg.http("POST", "/apikeys", headers={"Authorization": f"Bearer {kg.token}"},
                body={"name": name, "enabled": True}, base=kg.traffic_url)
    assert_missing_token(r)
    assert name not in _key_names(kg)


# --------------------------------------------------------------------------------------------
# At rest


def test_no_secret_is_stored_in_the_clear(kg):
    """Admin secrets, bearer tokens and key values are kept so that a copy of the data directory
    does not reveal them (hashed, or encrypted with a key held elsewhere)."""
    made = kg.keygate_json("admin", "credentials", "create", "--json")
    token = kg.keygate_json("admin", "token", "create", "--json")["token"]
    value = new_value()
    kg.boto().create_api_key(name=unique("atrest"), value=value, enabled=True)
    secrets = {
        "suite admin secret": kg.creds["secretAccessKey"],
        "new admin secret": made["secretAccessKey"],
        "suite bearer token": kg.token,
        "new bearer token": token,
        "deployed key value": kg.api_key_value,
        "created key value": value,
    }
    files = [p for p in kg.data_dir.rglob("*") if p.is_file()]
    assert files, f"nothing in {kg.data_dir}"
    for path in files:
        data = path.read_bytes()
        for what, secret in secrets.items():
            assert secret.encode() not in data, f"{what} found in the clear in {path}"
