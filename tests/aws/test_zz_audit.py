"""The audit log after the whole suite (this file runs last): every kind of change the other
tests made through the admin API is recorded with its actor, and no key value or secret is in it.
"""

import re

CHANGES = {
    "CreateApiKey", "UpdateApiKey", "DeleteApiKey", "ImportApiKeys", "RotateApiKey",
    "CreateUsagePlan", "UpdateUsagePlan", "DeleteUsagePlan",
    "UpdateUsagePlan:addApiStage", "UpdateUsagePlan:removeApiStage",
    "CreateUsagePlanKey", "DeleteUsagePlanKey", "UpdateUsage",
    "UpdateRestApiDefinition", "CreateDeployment",
}


def test_audit_log_records_every_change_without_secrets(kg):
    entries, position = [], None
    while True:
        path = "/audit?limit=1000" + (f"&position={position}" if position else "")
        page = kg.admin("GET", path).json()
        entries += page["item"]
        position = page.get("position")
        if not position:
            break
    actions = {e["action"] for e in entries}
    missing = CHANGES - actions
    assert not missing, f"changes missing from the audit log: {sorted(missing)}"
    access_key = kg.creds["accessKeyId"]
    assert any(e["actor"] == f"sigv4:{access_key}" for e in entries), "SigV4 changes carry the key id"
    assert any(e["actor"].startswith("token:") for e in entries), "bearer changes carry the token id"
    assert any(e["actor"].startswith("cli:") for e in entries), "CLI changes are audited too"
    for e in entries:
        assert {"seq", "time", "actor", "action", "target"} <= set(e), e
    text = repr(entries)
    for secret in (kg.api_key_value, kg.creds["secretAccessKey"], kg.token):
        assert secret not in text
    # No key value at all: generated values are 40 letters and digits; nothing in the log is.
    assert not re.search(r"(?<![A-Za-z0-9])[A-Za-z0-9]{40}(?![A-Za-z0-9])", text), "a key value is in the audit log"
