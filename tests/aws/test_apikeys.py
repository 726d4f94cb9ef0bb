"""API keys through the real `aws apigateway` CLI and boto3: create, list, get, update, delete,
import. Field names and error codes are Amazon API Gateway's (REST API v1).

keygate differs from AWS in one documented way: key values are hashed at rest, so a value is
returned only by the create, import and rotate responses; `includeValue(s)` returns none later.
"""

import re
import time

import pytest

from conftest import (
    assert_client_error,
    assert_forbidden,
    client_error,
    eventually,
    new_value,
    unique,
)

KEY_FIELDS_NEVER_LISTED = ("value",)


def _near_now(ts, slack=600):
    """CLI v1 prints timestamps as the service sent them: epoch seconds."""
    assert isinstance(ts, (int, float)) and not isinstance(ts, bool), ts
    assert abs(ts - time.time()) < slack, f"{ts} is not now ({time.time()})"


# --------------------------------------------------------------------------------------------
# create-api-key


def test_create_api_key_generates_a_40_char_value_shown_once(kg):
    name = unique("gen")
    k = kg.aws(
        "create-api-key",
        "--name", name,
        "--description", "made by the aws cli",
        "--enabled",
        "--customer-id", "cust-gen",
    )
    assert k["name"] == name
    assert k["description"] == "made by the aws cli"
    assert k["enabled"] is True
    assert k["customerId"] == "cust-gen"
    assert re.fullmatch(r"[A-Za-z0-9]{40}", k["value"]), k["value"]
    assert k["id"] and k["id"] != k["value"]
    _near_now(k["createdDate"])
    _near_now(k["lastUpdatedDate"])

    # Afterwards only the digest is kept: the value is never shown again.
    got = kg.aws("get-api-key", "--api-key", k["id"], "--include-value")
    assert "value" not in got, got
    assert got["id"] == k["id"] and got["name"] == name

    # Two generated values differ.
    other = kg.aws("create-api-key", "--name", unique("gen2"), "--enabled")
    assert re.fullmatch(r"[A-Za-z0-9]{40}", other["value"])
    assert other["value"] != k["value"] and other["id"] != k["id"]


def test_create_api_key_with_custom_value(kg):
    name = unique("custom")
    value = new_value(30)
    k = kg.aws("create-api-key", "--name", name, "--value", value, "--enabled")
    assert k["value"] == value
    assert k["name"] == name
    assert k["enabled"] is True


def test_create_api_key_disabled(kg):
    k = kg.aws("create-api-key", "--name", unique("off"), "--no-enabled")
    assert k["enabled"] is False
    assert kg.aws("get-api-key", "--api-key", k["id"])["enabled"] is False


def test_a_created_key_opens_the_route_once_in_the_stage_plan(kg):
    k = kg.aws("create-api-key", "--name", unique("route"), "--enabled")
    assert_forbidden(kg.traffic("/candidates", key=k["value"]))  # not in a plan of the stage yet
    kg.aws("create-usage-plan-key", "--usage-plan-id", kg.usage_plan_id, "--key-id", k["id"], "--key-type", "API_KEY")
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 200, timeout=1.5,
               what="key accepted after create-usage-plan-key")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a" * 19, id="19-chars"),
        pytest.param("a" * 129, id="129-chars"),
        pytest.param("abcdefghij-0123456789-abcdef", id="not-alphanumeric"),
    ],
)
def test_create_api_key_rejects_bad_values(kg, apigw, value):
    name = unique("bad")
    err = kg.aws_error("create-api-key", "--name", name, "--value", value, "--enabled")
    assert err.code == "BadRequestException", err
    e = client_error(apigw.create_api_key, name=name, value=value, enabled=True)
    assert_client_error(e, "BadRequestException", 400)
    assert kg.aws("get-api-keys", "--name-query", name)["items"] == []


@pytest.mark.parametrize(
    "field",
    [
        pytest.param({"name": "red\x1b[31mkey"}, id="esc-in-name"),
        pytest.param({"description": "nul\x00here"}, id="nul-in-description"),
        pytest.param({"customerId": "bell\x07"}, id="bel-in-customer-id"),
    ],
)
def test_control_characters_are_refused_on_create_and_update(kg, apigw, make_key, field):
    # Issue 25, finding 7: they were stored and printed raw by `keygate keys list`.
    name = unique("ctl")
    args = {"name": name, "enabled": True, **field}
    if field.get("name"):
        args["name"] = field["name"] + unique("")
    e = client_error(apigw.create_api_key, **args)
    assert_client_error(e, "BadRequestException", 400)
    assert "control character" in e.response["Error"]["Message"]
    assert kg.aws("get-api-keys", "--name-query", name)["items"] == []
    k = make_key()
    path, value = next(iter(field.items()))
    e = client_error(
        apigw.update_api_key,
        apiKey=k["id"],
        patchOperations=[{"op": "replace", "path": "/" + path, "value": value}],
    )
    assert_client_error(e, "BadRequestException", 400)
    assert apigw.get_api_key(apiKey=k["id"])["name"] == k["name"]


def test_create_api_key_rejects_a_duplicate_value(kg, apigw, make_key):
    k = make_key()
    e = client_error(apigw.create_api_key, name=unique("dup"), value=k["value"], enabled=True)
    assert_client_error(e, "ConflictException", 409)


# --------------------------------------------------------------------------------------------
# get-api-keys


def test_get_api_keys_filters_by_name_and_customer_without_values(kg, make_key):
    prefix = unique("flt")
    customer = unique("cust")
    alpha = make_key(name=f"{prefix}-alpha", customerId=customer, description="first")
    beta = make_key(name=f"{prefix}-beta", customerId=customer)
    other = make_key(name=unique("other"), customerId=unique("cust"))

    everything = kg.aws("get-api-keys")
    ids = {i["id"] for i in everything["items"]}
    assert {alpha["id"], beta["id"], other["id"], kg.api_key_id} <= ids
    for item in everything["items"]:
        assert "value" not in item, item

    # --name-query with a full name: that key only.
    got = kg.aws("get-api-keys", "--name-query", f"{prefix}-alpha")["items"]
    assert [i["id"] for i in got] == [alpha["id"]]
    a = got[0]
    assert a["name"] == f"{prefix}-alpha"
    assert a["customerId"] == customer
    assert a["description"] == "first"
    assert a["enabled"] is True
    _near_now(a["createdDate"])

    # --customer-id
    got = kg.aws("get-api-keys", "--customer-id", customer)["items"]
    assert sorted(i["id"] for i in got) == sorted([alpha["id"], beta["id"]])
    assert {i["customerId"] for i in got} == {customer}

    # --include-values: keygate keeps digests only, so existing keys come back without values.
    got = kg.aws("get-api-keys", "--customer-id", customer, "--include-values")["items"]
    assert sorted(i["id"] for i in got) == sorted([alpha["id"], beta["id"]])
    for item in got:
        assert "value" not in item, item

    assert kg.aws("get-api-keys", "--name-query", unique("nobody"))["items"] == []


def test_get_api_keys_name_query_is_a_prefix_match(kg, make_key):
    """As on AWS (GetApiKeys `name` query parameter): keys whose name starts with the query."""
    prefix = unique("pfx")
    alpha = make_key(name=f"{prefix}-alpha")
    beta = make_key(name=f"{prefix}-beta")
    make_key(name=unique("pfy"))
    got = kg.aws("get-api-keys", "--name-query", prefix)["items"]
    assert sorted(i["id"] for i in got) == sorted([alpha["id"], beta["id"]])


def test_get_api_keys_pages_with_limit_and_position(kg, apigw, make_key):
    customer = unique("paged")
    made = {make_key(customerId=customer)["id"] for _ in range(3)}

    # boto3, page by page: `limit` caps a page, `position` continues, no position on the last page.
    seen, position, pages = [], None, 0
    while True:
        kwargs = {"customerId": customer, "limit": 2}
        if position:
            kwargs["position"] = position
        page = apigw.get_api_keys(**kwargs)
        pages += 1
        assert len(page["items"]) <= 2, page
        seen += [i["id"] for i in page["items"]]
        position = page.get("position")
        if not position:
            break
        assert pages < 5, "paging does not end"
    assert pages == 2
    assert sorted(seen) == sorted(made)

    # The CLI follows `position` by itself (--page-size sets `limit` for each request).
    got = kg.aws("get-api-keys", "--customer-id", customer, "--page-size", "1")["items"]
    assert sorted(i["id"] for i in got) == sorted(made)
    # --max-items stops early and hands back a NextToken.
    first = kg.aws("get-api-keys", "--customer-id", customer, "--max-items", "2")
    assert len(first["items"]) == 2 and first.get("NextToken"), first


# --------------------------------------------------------------------------------------------
# get-api-key


def test_get_api_key(kg, apigw, make_key):
    name = unique("one")
    k = make_key(name=name, description="the one", customerId="cust-one")
    got = kg.aws("get-api-key", "--api-key", k["id"])
    assert got["id"] == k["id"]
    assert got["name"] == name
    assert got["description"] == "the one"
    assert got["customerId"] == "cust-one"
    assert got["enabled"] is True
    assert "value" not in got
    _near_now(got["createdDate"])
    _near_now(got["lastUpdatedDate"])

    # boto3 with includeValue=True: still no value (hashed at rest).
    b = apigw.get_api_key(apiKey=k["id"], includeValue=True)
    assert b["id"] == k["id"] and b["name"] == name
    assert "value" not in b
    assert b["createdDate"].year >= 2020  # parsed by botocore as a timestamp


def test_get_api_key_unknown_is_not_found(kg, apigw):
    err = kg.aws_error("get-api-key", "--api-key", "nosuchkey0")
    assert err.code == "NotFoundException", err
    e = client_error(apigw.get_api_key, apiKey="nosuchkey0")
    assert_client_error(e, "NotFoundException", 404)
    assert e.response["Error"]["Message"], "AWS errors carry a message"


# --------------------------------------------------------------------------------------------
# update-api-key


def test_disabling_a_key_refuses_it_within_one_second_and_enabling_restores_it(kg, key_in_stage):
    k = key_in_stage()
    assert kg.traffic("/candidates", key=k["value"]).status == 200

    out = kg.aws("update-api-key", "--api-key", k["id"], "--patch-operations", "op=replace,path=/enabled,value=false")
    assert out["id"] == k["id"]
    assert out["enabled"] is False
    assert "value" not in out
    took = eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 403, timeout=1.0,
                      what="a disabled key is refused")
    assert took <= 1.0
    assert_forbidden(kg.traffic("/candidates", key=k["value"]))
    assert kg.aws("get-api-key", "--api-key", k["id"])["enabled"] is False

    out = kg.aws("update-api-key", "--api-key", k["id"], "--patch-operations", "op=replace,path=/enabled,value=true")
    assert out["enabled"] is True
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 200, timeout=1.0,
               what="a re-enabled key is accepted")
    # The deployed key was never affected.
    assert kg.traffic("/candidates", key=kg.api_key_value).status == 200


def test_update_api_key_name_description_customer_id(kg, make_key):
    k = make_key(name=unique("before"), description="old", customerId="cust-old")
    new_name = unique("after")
    out = kg.aws(
        "update-api-key",
        "--api-key", k["id"],
        "--patch-operations",
        f"op=replace,path=/name,value={new_name}",
        "op=replace,path=/description,value=new description",
        "op=replace,path=/customerId,value=cust-new",
    )
    assert out["id"] == k["id"]
    assert out["name"] == new_name
    assert out["description"] == "new description"
    assert out["customerId"] == "cust-new"
    assert out["enabled"] is True
    assert "value" not in out
    assert out["lastUpdatedDate"] >= out["createdDate"]

    got = kg.aws("get-api-key", "--api-key", k["id"])
    assert (got["name"], got["description"], got["customerId"]) == (new_name, "new description", "cust-new")
    assert [i["id"] for i in kg.aws("get-api-keys", "--name-query", new_name)["items"]] == [k["id"]]
    assert [i["id"] for i in kg.aws("get-api-keys", "--customer-id", "cust-new")["items"]] == [k["id"]]


def test_update_api_key_value_is_immutable(kg, apigw, make_key):
    k = make_key()
    e = client_error(
        apigw.update_api_key,
        apiKey=k["id"],
        patchOperations=[{"op": "replace", "path": "/value", "value": new_value()}],
    )
    assert_client_error(e, "BadRequestException", 400)


def test_update_unknown_api_key_is_not_found(kg):
    err = kg.aws_error("update-api-key", "--api-key", "nosuchkey0", "--patch-operations", "op=replace,path=/enabled,value=false")
    assert err.code == "NotFoundException", err


# --------------------------------------------------------------------------------------------
# delete-api-key


def test_delete_api_key(kg, apigw, key_in_stage):
    k = key_in_stage()
    assert kg.aws("delete-api-key", "--api-key", k["id"]) is None  # 202, empty body

    err = kg.aws_error("get-api-key", "--api-key", k["id"])
    assert err.code == "NotFoundException", err
    assert_client_error(client_error(apigw.get_api_key, apiKey=k["id"]), "NotFoundException", 404)
    assert k["id"] not in {i["id"] for i in kg.aws("get-api-keys")["items"]}
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 403, timeout=1.0,
               what="a deleted key is refused")
    assert_forbidden(kg.traffic("/candidates", key=k["value"]))

    # Deleting again: not found.
    err = kg.aws_error("delete-api-key", "--api-key", k["id"])
    assert err.code == "NotFoundException", err


def test_delete_api_key_answers_202(apigw):
    k = apigw.create_api_key(name=unique("del"), enabled=True)
    res = apigw.delete_api_key(apiKey=k["id"])
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 202


# --------------------------------------------------------------------------------------------
# import-api-keys (POST /apikeys?mode=import&format=csv&failonwarnings=...)

# The example request body of the API Gateway developer guide ("Set up API keys using the REST
# API", apikey:import), verbatim but for the usage plan id: headers in mixed case with spaces,
# spaces around values, an empty description cell, booleans tRuE / TRUE / true.
AWS_REST_EXAMPLE_CSV = (
    "key,name, description, enabled, usageplanIds\n"
    "abcdef1234ghijklmnop8901234567, importedKey_1, firstone,  tRuE, {plan} \n"
    "abcdef1234ghijklmnop0123456789, importedKey_2, secondone, TRUE, {plan}\n"
    "abcdef1234ghijklmnop9012345678, importedKey_3,          , true, {plan}\n"
)


def _names_with_prefix(kg, prefix):
    """Names of all keys starting with `prefix` (filtered here, not with --name-query)."""
    return sorted(i["name"] for i in kg.aws("get-api-keys")["items"] if i["name"].startswith(prefix))


def _write(kg, text):
    path = kg.workdir / f"{unique('import')}.csv"
    path.write_text(text)
    return f"fileb://{path}"


def test_import_api_keys_aws_documentation_example(kg, make_plan):
    plan = make_plan(stage=True)
    body = _write(kg, AWS_REST_EXAMPLE_CSV.format(plan=plan["id"]))
    out = kg.aws("import-api-keys", "--body", body, "--format", "csv", "--fail-on-warnings")
    assert len(out["ids"]) == 3, out
    assert not out.get("warnings"), out

    keys = [kg.aws("get-api-key", "--api-key", i) for i in out["ids"]]
    by_name = {k["name"]: k for k in keys}
    assert set(by_name) == {"importedKey_1", "importedKey_2", "importedKey_3"}
    assert by_name["importedKey_1"]["description"] == "firstone"
    assert by_name["importedKey_2"]["description"] == "secondone"
    assert by_name["importedKey_3"].get("description", "") == ""
    for k in keys:
        assert k["enabled"] is True, k
        assert "value" not in k

    # usageplanIds made the plan's keys.
    plan_keys = kg.aws("get-usage-plan-keys", "--usage-plan-id", plan["id"])["items"]
    assert sorted(k["id"] for k in plan_keys) == sorted(out["ids"])
    assert {k["type"] for k in plan_keys} == {"API_KEY"}
    assert {k["name"] for k in plan_keys} == set(by_name)

    # The imported values are the keys (trimmed of the example's spaces).
    for value in ("abcdef1234ghijklmnop8901234567", "abcdef1234ghijklmnop0123456789", "abcdef1234ghijklmnop9012345678"):
        eventually(lambda: kg.traffic("/candidates", key=value).status == 200, timeout=1.5,
                   what=f"imported key {value} accepted")


def test_import_api_keys_file_format_examples(kg, make_plan):
    """The examples of the guide's "API key file format" page: any column order and case, and
    a key in several usage plans as a double-quoted comma list."""
    p1, p2 = make_plan(), make_plan()
    out = kg.aws("import-api-keys", "--body", _write(kg, "Key,name\napikey1234abcdefghij0123456789,MyFirstApiKey\n"), "--format", "csv")
    assert len(out["ids"]) == 1 and not out.get("warnings"), out
    first = kg.aws("get-api-key", "--api-key", out["ids"][0])
    assert first["name"] == "MyFirstApiKey" and first["enabled"] is True

    csv = f'Enabled,Name,key,UsageplanIds\ntrue,MySecondApiKey,apikey5678abcdefghij0123456789,"{p1["id"]},{p2["id"]}"\n'
    out = kg.aws("import-api-keys", "--body", _write(kg, csv), "--format", "csv", "--fail-on-warnings")
    assert len(out["ids"]) == 1 and not out.get("warnings"), out
    key_id = out["ids"][0]
    for plan in (p1, p2):
        keys = kg.aws("get-usage-plan-keys", "--usage-plan-id", plan["id"])["items"]
        assert [k["id"] for k in keys] == [key_id]
        assert keys[0]["name"] == "MySecondApiKey"
    plans = kg.aws("get-usage-plans", "--key-id", key_id)["items"]
    assert sorted(p["id"] for p in plans) == sorted([p1["id"], p2["id"]])


def test_import_api_keys_usage_plan_ids_in_single_quotes(kg, make_plan):
    """The guide: several ids are "enclosed with a pair of double or single quotes"."""
    p1, p2 = make_plan(), make_plan()
    csv = f"Name,Key,UsagePlanIds\n{unique('sq')},{new_value()},'{p1['id']},{p2['id']}'\n"
    out = kg.aws("import-api-keys", "--body", _write(kg, csv), "--format", "csv", "--fail-on-warnings")
    assert len(out["ids"]) == 1 and not out.get("warnings"), out
    for plan in (p1, p2):
        keys = kg.aws("get-usage-plan-keys", "--usage-plan-id", plan["id"])["items"]
        assert [k["id"] for k in keys] == out["ids"]


def test_import_api_keys_enabled_false_and_unknown_columns(kg):
    name = unique("imp-off")
    csv = f"Name,Key,Enabled,Team\n{name},{new_value()},FALSE,billing\n"
    out = kg.aws("import-api-keys", "--body", _write(kg, csv), "--format", "csv", "--fail-on-warnings")
    assert len(out["ids"]) == 1, out
    k = kg.aws("get-api-key", "--api-key", out["ids"][0])
    assert k["name"] == name and k["enabled"] is False


BAD_ROWS = {
    "key-19-chars": lambda p: f"{p}-bad,{'b' * 19},too short,true",
    "key-129-chars": lambda p: f"{p}-bad,{'b' * 129},too long,true",
    "key-not-alphanumeric": lambda p: f"{p}-bad,abcdefghij_0123456789-abcdefghij,punctuation,true",
    "name-missing": lambda p: f",{new_value()},no name,true",
}


@pytest.mark.parametrize("bad", sorted(BAD_ROWS))
def test_import_api_keys_bad_row(kg, apigw, bad):
    prefix = unique("imp")
    good1, good2 = new_value(), new_value()
    lines = [
        "Name,Key,Description,Enabled",             # line 1
        f"{prefix}-good1,{good1},good one,true",    # line 2
        BAD_ROWS[bad](prefix),                      # line 3
        f"{prefix}-good2,{good2},good two,TRUE",    # line 4
    ]
    body = _write(kg, "\n".join(lines) + "\n")

    # --fail-on-warnings: the whole file is refused and nothing is imported.
    err = kg.aws_error("import-api-keys", "--body", body, "--format", "csv", "--fail-on-warnings")
    assert err.code == "BadRequestException", err
    assert _names_with_prefix(kg, prefix) == []

    # Without it: the good rows are imported, the bad one comes back as a warning naming line 3.
    out = kg.aws("import-api-keys", "--body", body, "--format", "csv")
    assert len(out["ids"]) == 2, out
    warnings = out.get("warnings") or []
    assert len(warnings) == 1, out
    assert re.search(r"\b3\b", warnings[0]), f"warning does not name line 3: {warnings}"
    assert _names_with_prefix(kg, prefix) == [f"{prefix}-good1", f"{prefix}-good2"]
    got = {kg.aws("get-api-key", "--api-key", i)["name"]: i for i in out["ids"]}
    assert set(got) == {f"{prefix}-good1", f"{prefix}-good2"}


def test_import_api_keys_with_boto3_status_and_fail_on_warnings_rollback(kg, apigw):
    prefix = unique("bimp")
    ok = f"Name,Key\n{prefix}-a,{new_value()}\n{prefix}-b,{new_value()}\n".encode()
    res = apigw.import_api_keys(body=ok, format="csv", failOnWarnings=True)
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert len(res["ids"]) == 2

    bad = f"Name,Key\n{prefix}-c,{new_value()}\n{prefix}-d,short\n".encode()
    e = client_error(apigw.import_api_keys, body=bad, format="csv", failOnWarnings=True)
    assert_client_error(e, "BadRequestException", 400)
    assert _names_with_prefix(kg, prefix) == [f"{prefix}-a", f"{prefix}-b"]


def test_import_api_keys_requires_name_and_key_columns(kg, apigw):
    e = client_error(apigw.import_api_keys, body=f"Name,Description\n{unique('x')},no key column\n".encode(), format="csv", failOnWarnings=True)
    assert_client_error(e, "BadRequestException", 400)


# --------------------------------------------------------------------------------------------
# rotate (beyond AWS)


def test_rotate_returns_a_new_value_once(kg, make_key):
    k = make_key(name=unique("rot"))
    r = kg.admin("POST", f"/apikeys/{k['id']}/rotate?grace=1h")
    assert r.status == 200, r.body
    rotated = r.json()
    assert rotated["id"] == k["id"] and rotated["value"] and rotated["value"] != k["value"]
    again = kg.admin("GET", f"/apikeys/{k['id']}?includeValue=true").json()
    assert "value" not in again, "a value is shown only when it is made"
