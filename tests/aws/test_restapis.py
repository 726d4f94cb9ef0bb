"""The deployed service as API Gateway sees it: REST API, resources, methods, deployments, stages;
and API Gateway's rule that a method change takes effect only after a deployment.

The service (conftest.MOCK_YML) is `awsdemo`, stage `dev`: GET /candidates (private: true) and
GET /open (private: false), both `integration: mock`.
"""

from conftest import (
    SERVICE,
    always,
    assert_client_error,
    assert_forbidden,
    client_error,
    eventually,
)


def _resources(kg):
    return {r["path"]: r for r in kg.aws("get-resources", "--rest-api-id", kg.api_id)["items"]}


def test_get_rest_apis(kg):
    apis = {a["id"]: a for a in kg.aws("get-rest-apis")["items"]}
    assert kg.api_id in apis, apis
    api = apis[kg.api_id]
    assert api["name"] == SERVICE
    assert isinstance(api["createdDate"], (int, float)) and api["createdDate"] > 1.5e9
    assert api.get("apiKeySource", "HEADER") == "HEADER"

    one = kg.aws("get-rest-api", "--rest-api-id", kg.api_id)
    assert one["id"] == kg.api_id
    assert one["name"] == SERVICE
    assert one["rootResourceId"] == _resources(kg)["/"]["id"]


def test_get_unknown_rest_api_is_not_found(kg, apigw):
    err = kg.aws_error("get-rest-api", "--rest-api-id", "nosuchapi0")
    assert err.code == "NotFoundException", err
    assert_client_error(client_error(apigw.get_rest_api, restApiId="nosuchapi0"), "NotFoundException", 404)
    assert_client_error(client_error(apigw.get_resources, restApiId="nosuchapi0"), "NotFoundException", 404)


def test_get_resources(kg):
    by_path = _resources(kg)
    assert set(by_path) == {"/", "/candidates", "/open"}, sorted(by_path)
    root = by_path["/"]
    assert root["id"] and "parentId" not in root
    for path in ("/candidates", "/open"):
        r = by_path[path]
        assert r["id"]
        assert r["pathPart"] == path[1:]
        assert r["parentId"] == root["id"]
        assert list(r.get("resourceMethods", {})) == ["GET"], r
    assert len({r["id"] for r in by_path.values()}) == 3

    one = kg.aws("get-resource", "--rest-api-id", kg.api_id, "--resource-id", by_path["/candidates"]["id"])
    assert one["path"] == "/candidates" and one["pathPart"] == "candidates"
    assert "GET" in one["resourceMethods"]


def test_get_method(kg):
    by_path = _resources(kg)
    m = kg.aws("get-method", "--rest-api-id", kg.api_id, "--resource-id", by_path["/candidates"]["id"], "--http-method", "GET")
    assert m["httpMethod"] == "GET"
    assert m["apiKeyRequired"] is True
    assert m["authorizationType"] == "NONE"
    m = kg.aws("get-method", "--rest-api-id", kg.api_id, "--resource-id", by_path["/open"]["id"], "--http-method", "GET")
    assert m["httpMethod"] == "GET"
    assert m["apiKeyRequired"] is False

    err = kg.aws_error("get-method", "--rest-api-id", kg.api_id, "--resource-id", by_path["/open"]["id"], "--http-method", "POST")
    assert err.code == "NotFoundException", err


def test_get_stages_and_deployments(kg):
    # GetStages is the one list whose output member is `item` in botocore too (no rename).
    stages = kg.aws("get-stages", "--rest-api-id", kg.api_id)["item"]
    assert [s["stageName"] for s in stages] == [kg.stage]
    dev = stages[0]
    assert dev["deploymentId"]

    deployments = {d["id"]: d for d in kg.aws("get-deployments", "--rest-api-id", kg.api_id)["items"]}
    assert kg.deployment_id in deployments, deployments
    assert dev["deploymentId"] in deployments
    for d in deployments.values():
        assert isinstance(d["createdDate"], (int, float)), d

    one = kg.aws("get-stage", "--rest-api-id", kg.api_id, "--stage-name", kg.stage)
    assert one["stageName"] == kg.stage
    assert one["deploymentId"] == dev["deploymentId"]

    d = kg.aws("get-deployment", "--rest-api-id", kg.api_id, "--deployment-id", dev["deploymentId"])
    assert d["id"] == dev["deploymentId"]
    assert isinstance(d["createdDate"], (int, float))

    err = kg.aws_error("get-stage", "--rest-api-id", kg.api_id, "--stage-name", "nosuchstage")
    assert err.code == "NotFoundException", err


def _set_api_key_required(kg, resource_id, required):
    out = kg.aws(
        "update-method",
        "--rest-api-id", kg.api_id,
        "--resource-id", resource_id,
        "--http-method", "GET",
        "--patch-operations", f"op=replace,path=/apiKeyRequired,value={'true' if required else 'false'}",
    )
    assert out["httpMethod"] == "GET"
    assert out["apiKeyRequired"] is required
    return out


def _deploy(kg, description):
    d = kg.aws("create-deployment", "--rest-api-id", kg.api_id, "--stage-name", kg.stage, "--description", description)
    assert d["id"]
    assert d.get("description") == description
    assert isinstance(d["createdDate"], (int, float))
    stage = kg.aws("get-stage", "--rest-api-id", kg.api_id, "--stage-name", kg.stage)
    assert stage["deploymentId"] == d["id"], "create-deployment --stage-name points the stage at it"
    return d


def test_api_key_required_changes_only_with_a_deployment(kg):
    candidates = _resources(kg)["/candidates"]["id"]
    before = {d["id"] for d in kg.aws("get-deployments", "--rest-api-id", kg.api_id)["items"]}
    assert_forbidden(kg.traffic("/candidates"))

    _set_api_key_required(kg, candidates, False)
    deployed_open = done = False
    try:
        # The API definition changed...
        m = kg.aws("get-method", "--rest-api-id", kg.api_id, "--resource-id", candidates, "--http-method", "GET")
        assert m["apiKeyRequired"] is False
        # ...but the stage still runs its deployment: the route needs a key until a deployment.
        always(lambda: kg.traffic("/candidates").status == 403, duration=1.5,
               what="an undeployed apiKeyRequired=false has no effect")
        assert_forbidden(kg.traffic("/candidates"))
        assert kg.traffic("/candidates", key=kg.api_key_value).status == 200

        d = _deploy(kg, "candidates without a key")
        deployed_open = True
        assert d["id"] not in before
        eventually(lambda: kg.traffic("/candidates").status == 200, timeout=1.0,
                   what="after create-deployment the route answers without a key")
        assert kg.traffic("/candidates", key=kg.api_key_value).status == 200
        # Only that method changed.
        assert kg.traffic("/open").status == 200
        done = True
    finally:
        _set_api_key_required(kg, candidates, True)
        if deployed_open and not done:  # leave the stage as the other tests expect it
            kg.aws("create-deployment", "--rest-api-id", kg.api_id, "--stage-name", kg.stage)

    # Flip back: again only after a deployment.
    always(lambda: kg.traffic("/candidates").status == 200, duration=1.5,
           what="an undeployed apiKeyRequired=true has no effect")
    d = _deploy(kg, "candidates with a key again")
    eventually(lambda: kg.traffic("/candidates").status == 403, timeout=1.0,
               what="after create-deployment the route needs a key again")
    assert_forbidden(kg.traffic("/candidates"))
    assert kg.traffic("/candidates", key=kg.api_key_value).status == 200

    listed = {x["id"] for x in kg.aws("get-deployments", "--rest-api-id", kg.api_id)["items"]}
    assert d["id"] in listed and before <= listed


def test_create_deployment_of_unknown_api_is_not_found(kg, apigw):
    e = client_error(apigw.create_deployment, restApiId="nosuchapi0", stageName="dev")
    assert_client_error(e, "NotFoundException", 404)


def test_create_deployment_status_201_keeps_keys_working(kg, apigw):
    res = apigw.create_deployment(restApiId=kg.api_id, stageName=kg.stage, description="plain redeploy")
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert res["id"] and res["createdDate"].year >= 2020
    eventually(lambda: kg.traffic("/candidates", key=kg.api_key_value).status == 200, timeout=1.0)
    assert_forbidden(kg.traffic("/candidates"))
    assert apigw.get_stage(restApiId=kg.api_id, stageName=kg.stage)["deploymentId"] == res["id"]
