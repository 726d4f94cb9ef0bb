"""One running keygate for the whole AWS compatibility suite, and the clients that drive it.

The session fixture `kg`:
  1. makes a temp directory (data dir, a small mock serverless.yml, the server's log),
  2. `keygate deploy -c awsdemo.yml --json`  -> api id, deployment id, key value, usage plan id,
  3. `keygate admin credentials create --json` and `keygate admin token create --json`,
  4. starts `keygate serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0` and parses the two
     `keygate ... listening on http://...` lines,
  5. yields a `Keygate` (see its docstring), and at the end stops the server with SIGTERM and
     checks that it exited cleanly.

Nothing here skips: a missing binary, CLI or package fails the run (see pytest_runtest_makereport).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from unittest import mock

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
SERVICE = "awsdemo"
STAGE = "dev"
# The `aws` console script of the venv that runs these tests (tests/aws/run.sh's target/aws-venv).
# sys.executable is not resolved on purpose: the venv's bin/python is usually a symlink.
VENV_BIN = Path(sys.executable).parent

MOCK_YML = f"""\
service: {SERVICE}
provider:
  name: aws
  runtime: provided.al2023
  apiGateway:
    apiKeys: [{SERVICE}-key]
functions:
  mocked:
    handler: unused
    events:
      - http: {{path: candidates, method: get, private: true, integration: mock}}
      - http: {{path: open, method: get, private: false, integration: mock}}
"""

FORBIDDEN = {"message": "Forbidden"}
MISSING_TOKEN = {"message": "Missing Authentication Token"}
INVALID_TOKEN_MESSAGE = "The security token included in the request is invalid."

# Variables that would point the AWS clients at a real account, a profile or a proxy.
_AWS_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_API_GATEWAY",
    "AWS_CA_BUNDLE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
_AWS_FIXED = {
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    # One attempt: a refusal must show up as the refusal, not as five slow retries.
    "AWS_MAX_ATTEMPTS": "1",
    "AWS_RETRY_MODE": "standard",
    "AWS_PAGER": "",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def _clean_aws_environment() -> None:
    """boto3 in this process reads the environment too: make it see only what the suite sets."""
    for name in _AWS_DROP:
        os.environ.pop(name, None)
    os.environ.update(_AWS_FIXED)


_clean_aws_environment()


# --------------------------------------------------------------------------------------------
# No skips: a skipped test would hide a missing feature or a missing tool.


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite does not allow: {report.longrepr}"


# --------------------------------------------------------------------------------------------
# Small values


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_value(length: int = 40) -> str:
    """A valid custom API key value: letters and digits, 20-128 characters."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def utc_today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def utc_day(offset_days: int) -> str:
    return (_dt.datetime.now(_dt.timezone.utc).date() + _dt.timedelta(days=offset_days)).isoformat()


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Reply:
    """A plain HTTP response: status, lower-cased headers, body text."""

    status: int
    headers: dict[str, str]
    body: str

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"not JSON ({e}): status {self.status}, body {self.body!r}") from None

    def error_type(self) -> Optional[str]:
        """x-amzn-ErrorType without the optional `:namespace` suffix AWS sometimes appends."""
        v = self.header("x-amzn-errortype")
        return v.split(":", 1)[0] if v is not None else None

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.headers} {self.body!r}"


class AwsCliError(Exception):
    """`aws ...` exited non-zero. `code` is the AWS error code the CLI printed, if any."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        # e.g. "An error occurred (NotFoundException) when calling the GetApiKey operation
        # (reached max retries: 0): Invalid API Key identifier specified"
        m = re.search(
            r"An error occurred \(([^)]+)\) when calling the (\w+) operation(?: \([^)]*\))?: ?(.*)", stderr, re.S
        )
        self.code = m.group(1) if m else None
        self.operation = m.group(2) if m else None
        self.message = m.group(3).strip() if m else stderr.strip()
        super().__init__(f"{' '.join(argv[1:])} -> exit {returncode}: {stderr.strip()}")


class KeygateCliError(Exception):
    pass


def client_error(fn: Callable, *args, **kwargs) -> ClientError:
    """Calls a boto3 method that must fail and returns its ClientError."""
    try:
        result = fn(*args, **kwargs)
    except ClientError as e:
        return e
    raise AssertionError(f"expected an error from {getattr(fn, '__name__', fn)}, got {result!r}")


def assert_client_error(e: ClientError, code: str, status: int) -> None:
    got_code = e.response.get("Error", {}).get("Code")
    got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    assert (got_code, got_status) == (code, status), f"want {code} {status}, got {got_code} {got_status}: {e}"


def assert_forbidden(r: Reply) -> None:
    """The data-plane refusal of a key, exactly as API Gateway sends it."""
    assert r.status == 403, str(r)
    assert r.json() == FORBIDDEN, str(r)
    assert r.error_type() == "ForbiddenException", str(r)


def assert_missing_token(r: Reply) -> None:
    """403 Missing Authentication Token: API Gateway's answer to an unknown route or no credentials."""
    assert r.status == 403, str(r)
    assert r.json() == MISSING_TOKEN, str(r)


def eventually(predicate: Callable[[], Any], timeout: float = 1.0, interval: float = 0.025, what: str = "") -> float:
    """Polls `predicate` until it returns a truthy value; returns the seconds that took.

    Fails when `timeout` passes (the predicate is always evaluated at least once after it)."""
    start = time.monotonic()
    last: Any = None
    while True:
        last = predicate()
        if last:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what or predicate} (last: {last!r})")
        time.sleep(interval)


def always(predicate: Callable[[], Any], duration: float, interval: float = 0.1, what: str = "") -> None:
    """Checks that `predicate` holds on every poll for `duration` seconds."""
    end = time.monotonic() + duration
    while True:
        got = predicate()
        assert got, f"stopped holding: {what or predicate} ({got!r})"
        if time.monotonic() >= end:
            return
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# The running keygate


@dataclass
class Keygate:
    """A keygate with one deployed service, admin credentials and a running server.

    Addresses: `admin_url`, `traffic_url` (no trailing slash).
    State: `creds` {"accessKeyId", "secretAccessKey"}, `token` (bearer), `api_key_value` and
    `api_key_id` (the deployed `awsdemo-key`), `api_id`, `stage` ("dev"), `deployment_id`,
    `usage_plan_id` (the plan `awsdemo-dev` that deploy made, covering api_id/dev),
    `deploy_report`, `data_dir`, `workdir`, `log_path`.
    Helpers: `aws(*args)`, `aws_error(*args)`, `boto()`, `http(...)`, `admin(...)`, `traffic(...)`,
    `signed(...)`, `keygate(*args)`, `keygate_json(*args)`, `logs()`.
    """

    bin: Path
    workdir: Path
    data_dir: Path
    log_path: Path
    deploy_report: dict
    creds: dict
    token: str
    admin_url: str = ""
    traffic_url: str = ""
    stage: str = STAGE
    region: str = REGION
    proc: Optional[subprocess.Popen] = field(default=None, repr=False)
    stdout_lines: list = field(default_factory=list, repr=False)

    # -- deployed things ------------------------------------------------------------------

    @property
    def api_id(self) -> str:
        return self.deploy_report["apiId"]

    @property
    def deployment_id(self) -> str:
        return self.deploy_report["deploymentId"]

    @property
    def api_key_value(self) -> str:
        return self.deploy_report["apiKeys"][0]["value"]

    @property
    def api_key_id(self) -> str:
        return self.deploy_report["apiKeys"][0]["id"]

    @property
    def usage_plan_id(self) -> str:
        return self.deploy_report["usagePlans"][0]["id"]

    # -- keygate's own CLI ----------------------------------------------------------------

    def keygate_env(self) -> dict:
        env = dict(os.environ)
        env["KEYGATE_DATA_DIR"] = str(self.data_dir)
        for name in ("RUST_LOG", "KEYGATE_LISTEN", "KEYGATE_ADMIN_LISTEN", "KEYGATE_URL"):
            env.pop(name, None)
        return env

    def keygate(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs `keygate ARGS` against this data dir."""
        p = subprocess.run(
            [str(self.bin), *args],
            env=self.keygate_env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and p.returncode != 0:
            raise KeygateCliError(f"keygate {' '.join(args)} -> exit {p.returncode}\n{p.stderr}\n{p.stdout}")
        return p

    def keygate_json(self, *args: str) -> Any:
        p = self.keygate(*args)
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise KeygateCliError(f"keygate {' '.join(args)} printed no JSON: {p.stdout!r}") from None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- the real aws CLI -----------------------------------------------------------------

    def aws_env(self, creds: Optional[dict] = None) -> dict:
        creds = creds or self.creds
        env = dict(os.environ)
        for name in _AWS_DROP:
            env.pop(name, None)
        env.update(_AWS_FIXED)
        env["AWS_ACCESS_KEY_ID"] = creds["accessKeyId"]
        env["AWS_SECRET_ACCESS_KEY"] = creds["secretAccessKey"]
        return env

    def aws_argv(self, *args: str) -> list[str]:
        exe = VENV_BIN / "aws"
        return [
            str(exe),
            "--endpoint-url",
            self.admin_url,
            "--region",
            self.region,
            "--output",
            "json",
            "--cli-connect-timeout",
            "10",
            "--cli-read-timeout",
            "30",
            "apigateway",
            *args,
        ]

    def aws(self, *args: str, creds: Optional[dict] = None) -> Any:
        """Runs `aws apigateway ARGS` (the real CLI, `--output json`) and returns the parsed JSON
        (None for an empty output). Raises AwsCliError, carrying the AWS error code, on failure."""
        argv = self.aws_argv(*args)
        p = subprocess.run(argv, env=self.aws_env(creds), capture_output=True, text=True, timeout=90)
        if p.returncode != 0:
            raise AwsCliError(argv, p.returncode, p.stdout, p.stderr)
        out = p.stdout.strip()
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError:
            raise AssertionError(f"aws {' '.join(args)} printed no JSON: {out!r}") from None

    def aws_error(self, *args: str, creds: Optional[dict] = None) -> AwsCliError:
        """Runs `aws apigateway ARGS`, which must fail, and returns the error."""
        try:
            out = self.aws(*args, creds=creds)
        except AwsCliError as e:
            return e
        raise AssertionError(f"aws {' '.join(args)} should have failed, printed {out!r}")

    # -- boto3 ----------------------------------------------------------------------------

    def boto(self, access_key: Optional[str] = None, secret_key: Optional[str] = None):
        """A boto3 `apigateway` client for the admin listener (no retries)."""
        return boto3.session.Session().client(
            "apigateway",
            endpoint_url=self.admin_url,
            region_name=self.region,
            aws_access_key_id=access_key or self.creds["accessKeyId"],
            aws_secret_access_key=secret_key or self.creds["secretAccessKey"],
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=10,
                read_timeout=30,
            ),
        )

    # -- plain HTTP -----------------------------------------------------------------------

    def http(
        self,
        method: str,
        path: str,
        headers: Optional[dict] = None,
        body: Optional[bytes | str | dict | list] = None,
        base: Optional[str] = None,
    ) -> Reply:
        """A plain HTTP request (urllib, no proxies) to `base + path`; `base` defaults to the admin
        listener. A dict/list body is sent as JSON. Never raises on an HTTP error status."""
        url = (base or self.admin_url) + path
        headers = dict(headers or {})
        data: Optional[bytes]
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        req = urllib.request.Request(url, data=data, method=method.upper(), headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=30) as res:
                status, hdrs, raw = res.status, res.headers, res.read()
        except urllib.error.HTTPError as e:
            status, hdrs, raw = e.code, e.headers, e.read()
        return Reply(status, {k.lower(): v for k, v in hdrs.items()}, raw.decode("utf-8", "replace"))

    def admin(self, method: str, path: str, body: Any = None, token: Optional[str] = None, headers: Optional[dict] = None) -> Reply:
        """A request to the admin listener authenticated with the bearer token."""
        h = {"Authorization": f"Bearer {token or self.token}", "Accept": "application/json"}
        h.update(headers or {})
        return self.http(method, path, headers=h, body=body)

    def traffic(self, path: str, key: Optional[str] = None, method: str = "GET", headers: Optional[dict] = None) -> Reply:
        """A request to the traffic listener for `/{stage}{path}`, with `x-api-key` when given.
        (Other paths on the traffic listener: `http(..., base=kg.traffic_url)`.)"""
        h = dict(headers or {})
        if key is not None:
            h["x-api-key"] = key
        return self.http(method, f"/{self.stage}{path}", headers=h, base=self.traffic_url)

    def signed(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Optional[dict] = None,
        creds: Optional[dict] = None,
        when: Optional[_dt.datetime] = None,
        send_body: Optional[bytes] = None,
        send_path: Optional[str] = None,
        base: Optional[str] = None,
    ) -> Reply:
        """A request signed with botocore's SigV4Auth (service `apigateway`, us-east-1), sent
        with urllib. `when` signs at another time (X-Amz-Date and the signature both use it:
        a correct signature of a stale request). `send_body` / `send_path` send something other
        than what was signed (tampering)."""
        creds = creds or self.creds
        url = (base or self.admin_url) + path
        req = AWSRequest(method=method.upper(), url=url, data=body, headers=dict(headers or {}))
        auth = SigV4Auth(Credentials(creds["accessKeyId"], creds["secretAccessKey"]), "apigateway", self.region)
        if when is None:
            auth.add_auth(req)
        else:
            fixed = when.astimezone(_dt.timezone.utc).replace(tzinfo=None)
            with mock.patch.object(botocore.auth, "get_current_datetime", lambda *a, **k: fixed):
                auth.add_auth(req)
        sent = dict(req.headers.items())
        return self.http(
            method,
            send_path if send_path is not None else path,
            headers=sent,
            body=send_body if send_body is not None else (body or None),
            base=base,
        )


# --------------------------------------------------------------------------------------------
# Fixtures


def _keygate_bin() -> Path:
    raw = os.environ.get("KEYGATE_BIN", "target/debug/keygate")
    p = Path(raw)
    if not p.is_absolute():
        p = REPO / p
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"keygate binary not found: {p} (build it, or set KEYGATE_BIN)", pytrace=False)
    return p


def _start_server(kg: Keygate) -> None:
    log = open(kg.log_path, "ab")
    proc = subprocess.Popen(
        [str(kg.bin), "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        env=kg.keygate_env(),
        cwd=kg.workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        bufsize=1,
    )
    log.close()
    kg.proc = proc
    found: dict[str, str] = {}
    ready = threading.Event()
    traffic_re = re.compile(r"^keygate listening on (http://\S+?)/?$")
    admin_re = re.compile(r"^keygate admin listening on (http://\S+?)/?$")

    def read() -> None:
        # Keeps draining stdout for the server's whole life so it never blocks on a full pipe.
        for line in proc.stdout:
            line = line.rstrip("\n")
            kg.stdout_lines.append(line)
            m = traffic_re.match(line)
            if m:
                found["traffic"] = m.group(1)
            m = admin_re.match(line)
            if m:
                found["admin"] = m.group(1)
            if "traffic" in found and "admin" in found:
                ready.set()
        ready.set()

    threading.Thread(target=read, name="keygate-stdout", daemon=True).start()
    ready.wait(30)
    if "traffic" not in found or "admin" not in found:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pytest.fail(
            "keygate serve did not print both 'keygate listening on http://...' and "
            f"'keygate admin listening on http://...' within 30 s (exit {proc.returncode}).\n"
            f"stdout: {kg.stdout_lines}\nlog:\n{kg.logs()}",
            pytrace=False,
        )
    kg.traffic_url = found["traffic"]
    kg.admin_url = found["admin"]
    for url in (kg.traffic_url, kg.admin_url):
        assert url.startswith("http://127.0.0.1:"), f"keygate must listen on 127.0.0.1 only, printed {url}"
    assert kg.traffic_url != kg.admin_url, "admin and traffic must be separate listeners"


def _stop_server(kg: Keygate) -> None:
    proc = kg.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"keygate did not stop within 20 s of SIGTERM\n{kg.logs()}")
    assert proc.returncode == 0, f"keygate exited with {proc.returncode} after SIGTERM\n{kg.logs()}"


@pytest.fixture(scope="session")
def kg():
    """The running keygate (see `Keygate`)."""
    exe = _keygate_bin()
    aws_exe = VENV_BIN / "aws"
    if not aws_exe.exists():
        pytest.fail(f"the aws CLI is missing at {aws_exe}: run the suite with tests/aws/run.sh", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="keygate-aws-") as tmp:
        work = Path(tmp)
        yml = work / "awsdemo.yml"
        yml.write_text(MOCK_YML)
        kg = Keygate(
            bin=exe,
            workdir=work,
            data_dir=work / "data",
            log_path=work / "keygate.log",
            deploy_report={},
            creds={},
            token="",
        )
        kg.deploy_report = kg.keygate_json("deploy", "-c", str(yml), "--json")
        for path in (("apiId",), ("deploymentId",), ("apiKeys", 0, "value"), ("apiKeys", 0, "id"), ("usagePlans", 0, "id")):
            v: Any = kg.deploy_report
            for p in path:
                v = v[p]
            assert v, f"deploy --json lacks {path}: {kg.deploy_report}"
        creds = kg.keygate_json("admin", "credentials", "create", "--json")
        assert creds.get("accessKeyId") and creds.get("secretAccessKey"), creds
        kg.creds = {"accessKeyId": creds["accessKeyId"], "secretAccessKey": creds["secretAccessKey"]}
        token = kg.keygate_json("admin", "token", "create", "--json")
        assert token.get("token"), token
        kg.token = token["token"]
        _start_server(kg)
        try:
            yield kg
        finally:
            _stop_server(kg)


@pytest.fixture(scope="session")
def apigw(kg):
    """A boto3 apigateway client signed with the suite's admin credentials."""
    return kg.boto()


@pytest.fixture
def make_key(kg, apigw):
    """Factory: creates an enabled API key with a custom value through boto3; returns the
    CreateApiKey response (with `value`). Keys are deleted after the test (best effort)."""
    made: list[str] = []

    def make(name: Optional[str] = None, value: Optional[str] = None, **kwargs) -> dict:
        kwargs.setdefault("enabled", True)
        k = apigw.create_api_key(name=name or unique("key"), value=value or new_value(), **kwargs)
        made.append(k["id"])
        return k

    yield make
    for key_id in made:
        try:
            apigw.delete_api_key(apiKey=key_id)
        except Exception:
            pass


@pytest.fixture
def make_plan(kg, apigw):
    """Factory: creates a usage plan through boto3 (`stage=True` covers api_id/dev); returns the
    CreateUsagePlan response. Plans are emptied and deleted after the test (best effort)."""
    made: list[str] = []

    def make(name: Optional[str] = None, stage: bool = False, **kwargs) -> dict:
        if stage:
            kwargs.setdefault("apiStages", [{"apiId": kg.api_id, "stage": kg.stage}])
        p = apigw.create_usage_plan(name=name or unique("plan"), **kwargs)
        made.append(p["id"])
        return p

    yield make
    for plan_id in made:
        try:
            for k in apigw.get_usage_plan_keys(usagePlanId=plan_id).get("items", []):
                apigw.delete_usage_plan_key(usagePlanId=plan_id, keyId=k["id"])
            plan = apigw.get_usage_plan(usagePlanId=plan_id)
            ops = [
                {"op": "remove", "path": "/apiStages", "value": f"{s['apiId']}:{s['stage']}"}
                for s in plan.get("apiStages", [])
            ]
            if ops:
                apigw.update_usage_plan(usagePlanId=plan_id, patchOperations=ops)
            apigw.delete_usage_plan(usagePlanId=plan_id)
        except Exception:
            pass


@pytest.fixture
def key_in_stage(kg, apigw, make_key):
    """Factory: a new enabled key added to the deploy's usage plan (so it may call /dev/...),
    already accepted by the traffic listener. Returns the CreateApiKey response."""

    def make(**kwargs) -> dict:
        k = make_key(**kwargs)
        apigw.create_usage_plan_key(usagePlanId=kg.usage_plan_id, keyId=k["id"], keyType="API_KEY")
        eventually(lambda: kg.traffic("/candidates", key=k["value"]).status == 200, timeout=1.5,
                   what="a key added to the stage's plan is accepted")
        return k

    return make
