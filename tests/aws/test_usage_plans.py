"""Usage plans, their keys and usage through the real `aws apigateway` CLI and boto3.

Wire names vs SDK names: usage is `values` on the wire and `items` in the CLI/boto3 output;
lists are `item` on the wire and `items` in the CLI/boto3 output.
"""

from conftest import (
    assert_client_error,
    assert_forbidden,
    client_error,
    eventually,
    unique,
    utc_day,
    utc_today,
)


def _stages(plan):
    return sorted((s["apiId"], s["stage"]) for s in plan.get("apiStages") or [])


# --------------------------------------------------------------------------------------------
# create-usage-plan / get-usage-plan(s) / update-usage-plan / delete-usage-plan


def test_create_usage_plan(kg):
    name = unique("plan")
    plan = kg.aws(
        "create-usage-plan",
        "--name", name,
        "--description", "made by the aws cli",
        "--throttle", "burstLimit=10,rateLimit=5",
        "--quota", "limit=1000,period=DAY",
        "--api-stages", f"apiId={kg.api_id},stage={kg.stage}",
    )
    assert plan["id"]
    assert plan["name"] == name
    assert plan["description"] == "made by the aws cli"
    assert plan["throttle"]["burstLimit"] == 10
    assert plan["throttle"]["rateLimit"] == 5
    assert plan["quota"]["limit"] == 1000
    assert plan["quota"]["period"] == "DAY"
    assert _stages(plan) == [(kg.api_id, kg.stage)]

    got = kg.aws("get-usage-plan", "--usage-plan-id", plan["id"])
    assert got["id"] == plan["id"] and got["name"] == name
    assert got["throttle"]["burstLimit"] == 10 and got["throttle"]["rateLimit"] == 5
    assert got["quota"]["limit"] == 1000 and got["quota"]["period"] == "DAY"
    assert _stages(got) == [(kg.api_id, kg.stage)]

    listed = {p["id"]: p for p in kg.aws("get-usage-plans")["items"]}
    assert plan["id"] in listed and kg.usage_plan_id in listed
    assert listed[plan["id"]]["name"] == name
    assert _stages(listed[kg.usage_plan_id]) == [(kg.api_id, kg.stage)]


def test_create_usage_plan_status_201_and_minimal(apigw):
    res = apigw.create_usage_plan(name=unique("bare"))
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert res["id"] and "throttle" not in res and "quota" not in res
    assert not res.get("apiStages")


def test_create_usage_plan_for_unknown_stage_is_refused(kg, apigw):
    """AWS: BadRequestException "Invalid API Stage {api: ..., stage: ...} specified for usageplan
    ..." (NotFoundException is accepted too)."""
    e = client_error(apigw.create_usage_plan, name=unique("nostage"), apiStages=[{"apiId": kg.api_id, "stage": "nosuchstage"}])
    got = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
    assert got in {("BadRequestException", 400), ("NotFoundException", 404)}, e


def test_update_usage_plan_throttle_and_quota(kg, make_plan):
    plan = make_plan(throttle={"burstLimit": 10, "rateLimit": 5.0}, quota={"limit": 1000, "period": "DAY"})
    out = kg.aws(
        "update-usage-plan",
        "--usage-plan-id", plan["id"],
        "--patch-operations",
        "op=replace,path=/throttle/rateLimit,value=20",
        "op=replace,path=/throttle/burstLimit,value=40",
        "op=replace,path=/quota/limit,value=500",
        "op=replace,path=/quota/period,value=WEEK",
    )
    assert out["id"] == plan["id"]
    assert out["throttle"]["rateLimit"] == 20
    assert out["throttle"]["burstLimit"] == 40
    assert out["quota"]["limit"] == 500
    assert out["quota"]["period"] == "WEEK"
    got = kg.aws("get-usage-plan", "--usage-plan-id", plan["id"])
    assert (got["throttle"]["rateLimit"], got["throttle"]["burstLimit"]) == (20, 40)
    assert (got["quota"]["limit"], got["quota"]["period"]) == (500, "WEEK")


def test_update_usage_plan_name_and_description(kg, make_plan):
    plan = make_plan(description="old")
    new_name = unique("renamed")
    out = kg.aws(
        "update-usage-plan",
        "--usage-plan-id", plan["id"],
        "--patch-operations",
        f"op=replace,path=/name,value={new_name}",
        "op=replace,path=/description,value=new text",
    )
    assert out["name"] == new_name and out["description"] == "new text"


def test_update_usage_plan_add_and_remove_api_stage(kg, apigw, make_plan, make_key):
    plan = make_plan()
    assert _stages(plan) == []
    k = make_key()
    apigw.create_usage_plan_key(usagePlanId=plan["id"], keyId=k["id"], keyType="API_KEY")
    assert_forbidden(kg.traffic("/candidates", key=k["value"]))  # its plan covers no stage

    stage = f"{kg.api_id}:{kg.stage}"
    out = kg.aws("update-usage-plan", "--usage-plan-id", plan["id"], "--patch-operations", f"op=add,path=/apiStages,value={stage}")
    assert _stages(out) == [(kg.api_id, kg.stage)]
    assert _stages(kg.aws("get-usage-plan", "--usage-plan-id", plan["id"])) == [(kg.api_id, kg.stage)]
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 200, timeout=1.5,
               what="the key's plan now covers the stage")

    out = kg.aws("update-usage-plan", "--usage-plan-id", plan["id"], "--patch-operations", f"op=remove,path=/apiStages,value={stage}")
    assert _stages(out) == []
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 403, timeout=1.5,
               what="the key's plan no longer covers the stage")


def test_update_usage_plan_bad_path_is_bad_request(apigw, make_plan):
    plan = make_plan()
    e = client_error(apigw.update_usage_plan, usagePlanId=plan["id"],
                     patchOperations=[{"op": "replace", "path": "/nosuchfield", "value": "1"}])
    assert_client_error(e, "BadRequestException", 400)


def test_delete_usage_plan(kg, apigw):
    plan = apigw.create_usage_plan(name=unique("gone"))
    res = apigw.delete_usage_plan(usagePlanId=plan["id"])
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert_client_error(client_error(apigw.get_usage_plan, usagePlanId=plan["id"]), "NotFoundException", 404)
    assert plan["id"] not in {p["id"] for p in kg.aws("get-usage-plans")["items"]}


def test_get_unknown_usage_plan_is_not_found(kg):
    err = kg.aws_error("get-usage-plan", "--usage-plan-id", "nosuch")
    assert err.code == "NotFoundException", err


# --------------------------------------------------------------------------------------------
# usage plan keys


def test_usage_plan_keys_create_list_get_delete(kg, apigw, make_plan, make_key):
    plan = make_plan(stage=True)
    name = unique("member")
    k = make_key(name=name)

    pk = kg.aws("create-usage-plan-key", "--usage-plan-id", plan["id"], "--key-id", k["id"], "--key-type", "API_KEY")
    assert pk["id"] == k["id"]
    assert pk["name"] == name
    assert pk["type"] == "API_KEY"
    assert "value" not in pk  # hashed at rest: never shown after creation
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 200, timeout=1.5,
               what="a plan key may call the plan's stage")

    items = kg.aws("get-usage-plan-keys", "--usage-plan-id", plan["id"])["items"]
    assert [(i["id"], i["name"], i["type"]) for i in items] == [(k["id"], name, "API_KEY")]
    one = kg.aws("get-usage-plan-key", "--usage-plan-id", plan["id"], "--key-id", k["id"])
    assert (one["id"], one["name"], one["type"]) == (k["id"], name, "API_KEY")
    plans = kg.aws("get-usage-plans", "--key-id", k["id"])["items"]
    assert [p["id"] for p in plans] == [plan["id"]]

    assert kg.aws("delete-usage-plan-key", "--usage-plan-id", plan["id"], "--key-id", k["id"]) is None
    assert kg.aws("get-usage-plan-keys", "--usage-plan-id", plan["id"])["items"] == []
    err = kg.aws_error("get-usage-plan-key", "--usage-plan-id", plan["id"], "--key-id", k["id"])
    assert err.code == "NotFoundException", err
    # The key itself stays, but may no longer call the stage.
    assert kg.aws("get-api-key", "--api-key", k["id"])["id"] == k["id"]
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 403, timeout=1.0,
               what="a key removed from its plan is refused")
    assert_forbidden(kg.traffic("/candidates", key=k["value"]))


def test_usage_plan_key_status_codes(apigw, make_plan, make_key):
    plan, k = make_plan(), make_key()
    res = apigw.create_usage_plan_key(usagePlanId=plan["id"], keyId=k["id"], keyType="API_KEY")
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 201
    res = apigw.delete_usage_plan_key(usagePlanId=plan["id"], keyId=k["id"])
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 202


def test_usage_plan_key_for_unknown_key_or_plan_is_not_found(kg, apigw, make_plan, make_key):
    plan, k = make_plan(), make_key()
    e = client_error(apigw.create_usage_plan_key, usagePlanId=plan["id"], keyId="nosuchkey0", keyType="API_KEY")
    assert_client_error(e, "NotFoundException", 404)
    e = client_error(apigw.create_usage_plan_key, usagePlanId="nosuch", keyId=k["id"], keyType="API_KEY")
    assert_client_error(e, "NotFoundException", 404)


def test_a_key_in_a_second_plan_for_the_same_stage_is_a_conflict(kg, apigw, make_plan, make_key):
    first = make_plan(stage=True)
    second = make_plan(stage=True)
    k = make_key()
    kg.aws("create-usage-plan-key", "--usage-plan-id", first["id"], "--key-id", k["id"], "--key-type", "API_KEY")

    err = kg.aws_error("create-usage-plan-key", "--usage-plan-id", second["id"], "--key-id", k["id"], "--key-type", "API_KEY")
    assert err.code == "ConflictException", err
    e = client_error(apigw.create_usage_plan_key, usagePlanId=second["id"], keyId=k["id"], keyType="API_KEY")
    assert_client_error(e, "ConflictException", 409)

    assert kg.aws("get-usage-plan-keys", "--usage-plan-id", second["id"])["items"] == []
    assert [p["id"] for p in kg.aws("get-usage-plans", "--key-id", k["id"])["items"]] == [first["id"]]
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 200, timeout=1.5,
               what="the key still works through its first plan")


def test_adding_a_stage_that_makes_a_key_conflict_is_refused(kg, apigw, make_plan, make_key):
    """The same rule from the other side: a plan may not take a stage that one of its keys
    already reaches through another plan."""
    first = make_plan(stage=True)
    second = make_plan()
    k = make_key()
    apigw.create_usage_plan_key(usagePlanId=first["id"], keyId=k["id"], keyType="API_KEY")
    apigw.create_usage_plan_key(usagePlanId=second["id"], keyId=k["id"], keyType="API_KEY")
    e = client_error(apigw.update_usage_plan, usagePlanId=second["id"],
                     patchOperations=[{"op": "add", "path": "/apiStages", "value": f"{kg.api_id}:{kg.stage}"}])
    assert_client_error(e, "ConflictException", 409)
    assert _stages(apigw.get_usage_plan(usagePlanId=second["id"])) == []


# --------------------------------------------------------------------------------------------
# get-usage / update-usage


def _metered_key(kg, apigw, make_plan, make_key, limit=100, requests=3):
    """A key alone in a plan with a daily quota, after `requests` admitted requests (counted)."""
    plan = make_plan(stage=True, quota={"limit": limit, "period": "DAY"})
    k = make_key()
    apigw.create_usage_plan_key(usagePlanId=plan["id"], keyId=k["id"], keyType="API_KEY")
    # The first admitted request may come only after the plan change reaches the gateway.
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 200, timeout=1.5,
               what="metered key accepted")
    for _ in range(requests - 1):
        r = kg.traffic("/candidates", key=k["value"])
        assert r.status == 200, str(r)
    today = utc_today()

    # Counters reach the store every 500 ms: wait until get-usage shows them.
    def counted():
        res = apigw.get_usage(usagePlanId=plan["id"], startDate=today, endDate=today)
        return res.get("items", {}).get(k["id"]) == [[requests, limit - requests]] and res

    eventually(counted, timeout=3.0, what=f"get-usage shows [[{requests}, {limit - requests}]]")
    return plan, k, today


def test_get_usage(kg, apigw, make_plan, make_key):
    plan, k, today = _metered_key(kg, apigw, make_plan, make_key, limit=100, requests=3)

    out = kg.aws("get-usage", "--usage-plan-id", plan["id"], "--start-date", today, "--end-date", today)
    assert out["usagePlanId"] == plan["id"]
    assert out["startDate"] == today and out["endDate"] == today
    assert out["items"] == {k["id"]: [[3, 97]]}

    # --key-id filters to one key.
    out = kg.aws("get-usage", "--usage-plan-id", plan["id"], "--key-id", k["id"], "--start-date", today, "--end-date", today)
    assert out["items"] == {k["id"]: [[3, 97]]}

    # One [used, remaining] pair per day of the range, oldest first.
    start = utc_day(-2)
    out = kg.aws("get-usage", "--usage-plan-id", plan["id"], "--start-date", start, "--end-date", today)
    assert out["startDate"] == start and out["endDate"] == today
    days = out["items"][k["id"]]
    assert len(days) == 3, days
    assert [d[0] for d in days] == [0, 0, 3]
    assert days[-1] == [3, 97]

    # On the wire the map is `values` (the SDKs rename it to `items`).
    r = kg.admin("GET", f"/usageplans/{plan['id']}/usage?startDate={today}&endDate={today}")
    assert r.status == 200, str(r)
    body = r.json()
    assert body["values"] == {k["id"]: [[3, 97]]}
    assert body["usagePlanId"] == plan["id"]
    assert "items" not in body


def test_get_usage_requires_dates(apigw, make_plan):
    plan = make_plan()
    e = client_error(apigw.get_usage, usagePlanId=plan["id"], startDate="not-a-date", endDate=utc_today())
    assert_client_error(e, "BadRequestException", 400)


def test_update_usage_sets_the_remaining_quota(kg, apigw, make_plan, make_key):
    plan, k, today = _metered_key(kg, apigw, make_plan, make_key, limit=100, requests=3)

    out = kg.aws(
        "update-usage",
        "--usage-plan-id", plan["id"],
        "--key-id", k["id"],
        "--patch-operations", "op=replace,path=/remaining,value=50",
    )
    assert out["usagePlanId"] == plan["id"]
    assert out["items"][k["id"]][-1] == [3, 50], out
    got = kg.aws("get-usage", "--usage-plan-id", plan["id"], "--start-date", today, "--end-date", today)
    assert got["items"] == {k["id"]: [[3, 50]]}

    # remaining=0: the gateway refuses the key's next request with the quota 429 within a second.
    out = kg.aws(
        "update-usage",
        "--usage-plan-id", plan["id"],
        "--key-id", k["id"],
        "--patch-operations", "op=replace,path=/remaining,value=0",
    )
    assert out["items"][k["id"]][-1] == [3, 0], out
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 429, timeout=1.0,
               what="quota used up after update-usage remaining=0")
    r = kg.traffic("/candidates", key=k["value"])
    assert r.status == 429 and r.json() == {"message": "Limit Exceeded"}, str(r)


def test_a_quota_set_through_the_api_is_enforced(kg, apigw, make_plan, make_key):
    plan, k, today = _metered_key(kg, apigw, make_plan, make_key, limit=2, requests=2)
    r = kg.traffic("/candidates", key=k["value"])
    assert r.status == 429, str(r)
    assert r.json() == {"message": "Limit Exceeded"}
    assert r.error_type() == "LimitExceededException"
    # Raising the limit through update-usage-plan lets the key through again.
    kg.aws("update-usage-plan", "--usage-plan-id", plan["id"], "--patch-operations", "op=replace,path=/quota/limit,value=10")
    eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 200, timeout=1.5,
               what="quota raised by update-usage-plan")


def test_update_usage_for_a_key_not_in_the_plan_is_not_found(apigw, make_plan, make_key):
    plan, k = make_plan(quota={"limit": 10, "period": "DAY"}), make_key()
    e = client_error(apigw.update_usage, usagePlanId=plan["id"], keyId=k["id"],
                     patchOperations=[{"op": "replace", "path": "/remaining", "value": "5"}])
    assert_client_error(e, "NotFoundException", 404)


def test_get_usage_plans_pages(kg, apigw, make_plan):
    limit = 1
    made = {make_plan()["id"] for _ in range(2)}
    seen, position = [], None
    for _ in range(100):
        kwargs = {"limit": limit}
        if position:
            kwargs["position"] = position
        page = apigw.get_usage_plans(**kwargs)
        assert len(page["items"]) <= limit
        seen += [p["id"] for p in page["items"]]
        position = page.get("position")
        if not position:
            break
    else:
        raise AssertionError("paging does not end")
    assert made <= set(seen)
    assert len(seen) == len(set(seen)), "a plan listed twice"


def test_plans_and_plan_keys_page_with_limit_position_and_name(kg, apigw, make_plan, make_key):
    prefix = unique("pg")
    plans = {make_plan(name=f"{prefix}-{i}")["id"] for i in range(3)}
    # boto3's paginator follows `position` with `limit` per request; the name query is a prefix.
    pages = apigw.get_paginator("get_usage_plans").paginate(PaginationConfig={"PageSize": 2})
    seen = [p["id"] for page in pages for p in page["items"] if p["name"].startswith(prefix)]
    assert sorted(seen) == sorted(plans)

    plan = make_plan(name=f"{prefix}-keys")
    keys = [make_key(name=f"{prefix}-k{i}") for i in range(3)]
    for k in keys:
        apigw.create_usage_plan_key(usagePlanId=plan["id"], keyId=k["id"], keyType="API_KEY")
    first = apigw.get_usage_plan_keys(usagePlanId=plan["id"], limit=2)
    assert [k["name"] for k in first["items"]] == [f"{prefix}-k0", f"{prefix}-k1"]
    assert first.get("position"), first
    rest = apigw.get_usage_plan_keys(usagePlanId=plan["id"], limit=2, position=first["position"])
    assert [k["name"] for k in rest["items"]] == [f"{prefix}-k2"] and "position" not in rest
    named = apigw.get_usage_plan_keys(usagePlanId=plan["id"], nameQuery=f"{prefix}-k1")
    assert [k["name"] for k in named["items"]] == [f"{prefix}-k1"]
    # A position that no page returned is refused, as AWS refuses a bad token.
    bad = kg.admin("GET", f"/usageplans/{plan['id']}/keys?position=zz")
    assert bad.status == 400, bad.body


def test_a_plans_redis_policy_through_awscli(kg, make_plan):
    """keygate's own `fallback` (what decides a plan's limits while Redis does not answer) goes
    through awscli's patch operations as they are; awscli's output leaves the field out (its
    model has none), keygate's shows it."""
    plan = make_plan()
    kg.aws("update-usage-plan", "--usage-plan-id", plan["id"], "--patch-operations",
           "op=replace,path=/fallback,value=refuse")
    assert kg.keygate_json("plans", "get", plan["name"], "--json")["fallback"] == "refuse"
    kg.aws("update-usage-plan", "--usage-plan-id", plan["id"], "--patch-operations", "op=remove,path=/fallback")
    assert "fallback" not in kg.keygate_json("plans", "get", plan["name"], "--json")
    e = kg.aws_error("update-usage-plan", "--usage-plan-id", plan["id"], "--patch-operations",
                     "op=replace,path=/fallback,value=open")
    assert "BadRequestException" in str(e)
