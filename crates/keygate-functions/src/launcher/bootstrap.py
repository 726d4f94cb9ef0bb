# keygate's Python runtime bootstrap, run as `python3 -c <this file>` with the task root as the
# working directory. It does what AWS's runtime interface client (awslambdaric) does for a
# handler, over the Lambda Runtime API keygate serves on AWS_LAMBDA_RUNTIME_API:
# - resolves `_HANDLER` (`dir/module.function`) as Lambda does: split at the last dot, `/` to
#   `.`, importlib.import_module; a failure goes to /runtime/init/error with Lambda's errorType
#   (Runtime.MalformedHandlerName, Runtime.ImportModuleError, Runtime.UserCodeSyntaxError,
#   Runtime.HandlerNotFound) and the process exits;
# - runs init once per process (the module's top level);
# - calls `handler(event, context)` and posts the result as JSON (Decimal as a number), or the
#   exception as `{errorMessage, errorType, requestId, stackTrace}`;
# - logs through `logging` in Lambda's format, with the request id;
# - with KEYGATE_QUEUE_DEPTH = Q, keeps Q polls open ahead of the event it runs, on a second
#   connection, and runs the events strictly in the order they come, each only once the previous
#   answer is in the kernel's hands (so keygate knows which event may have started), skipping
#   one whose deadline passed while it waited.
# Pinned by crates/keygate-functions/tests/functions/python.rs.
import decimal
import importlib
import json
import logging
import os
import socket
import sys
import time
import traceback

API = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
PREFIX = "/2018-06-01/runtime"
# A request body over this size may be refused with `connection: close`.
MAY_BE_REFUSED = 1024 * 1024


class Client:
    """One keep-alive connection to the Runtime API, speaking just enough HTTP/1.1 (keygate's
    server always answers with Content-Length; anything else is refused): http.client parses
    every answer's header block with the email package, a large part of an invocation's cost.
    Requests are pipelined: an answer and the next poll leave in one write, so the process and
    keygate wake each other once per invocation, not twice."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.sock = None
        self.buffer = bytearray()
        # Requests sent on this connection and not answered yet.
        self.outstanding = 0

    def exchange(self, requests):
        """Sends `requests` ((method, path, body, headers) each) in one write and returns their
        answers ((status, headers, body) each, header names in lower case), in order. What keygate
        did not read (behind an answer saying `connection: close`, as a refused too-large answer
        does) is sent again on a new connection; a broken connection is made again and what was
        not answered sent once more."""
        answers = []
        broken = 0
        while len(answers) < len(requests):
            todo = requests[len(answers) :]
            try:
                if self.sock is None:
                    self._connect()
                self.sock.sendall(b"".join(self._request(*r) for r in todo))
                self.outstanding += len(todo)
                for _ in todo:
                    answers.append(self._answer())
                    if self.sock is None:
                        break
            except OSError:
                self.close()
                broken += 1
                if broken == 2:
                    raise
        return answers

    def _connect(self):
        self.sock = socket.create_connection(self.address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.outstanding = 0

    def send(self, requests):
        """Sends `requests` in one write, their answers left to read later (queued delivery).
        When this returns, they are in the kernel's hands. Whether the connection is new (keygate
        has answered nothing on it yet) is returned."""
        fresh = self.sock is None
        if fresh:
            self._connect()
        self.sock.sendall(b"".join(self._request(*r) for r in requests))
        self.outstanding += len(requests)
        return fresh

    def answer(self):
        """The next answer on this connection, waiting for it."""
        return self._answer()

    def answer_all(self):
        """Waits for the answers to everything sent on this connection."""
        while self.outstanding > 0 and self.sock is not None:
            self._answer()

    def answers_ready(self):
        """Reads what has arrived without waiting and takes the complete answers out; how many
        there were."""
        self.sock.setblocking(False)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buffer += chunk
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        taken = 0
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                break
            del self.buffer[: end + 4 + length]
            self.outstanding -= 1
            taken += 1
            if "connection: close" in head:
                self.close()
                break
        return taken

    @staticmethod
    def _request(method, path, body=None, headers=None):
        head = f"{method} {PREFIX}{path} HTTP/1.1\r\nHost: {API}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        return (head + "\r\n").encode("latin-1") + (body or b"")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the Runtime API closed the connection")
        self.buffer += chunk

    def _answer(self):
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers or "content-length" not in headers:
            raise ConnectionError("the Runtime API answered without Content-Length")
        length = int(headers["content-length"])
        while len(self.buffer) < end + 4 + length:
            self._fill()
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.outstanding -= 1
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


JSON = {"Content-Type": "application/json"}


class RuntimeError_(Exception):
    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type


def error_body(exc, request_id=""):
    error_type = getattr(exc, "error_type", None) or type(exc).__name__
    # The runtime's own errors (a missing module, a bad handler name) have no user frames.
    frames = [] if isinstance(exc, RuntimeError_) else traceback.extract_tb(exc.__traceback__)
    return {
        "errorMessage": str(exc),
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def to_json(value):
    def default(o):
        if isinstance(o, decimal.Decimal):
            return int(o) if o == o.to_integral_value() else float(o)
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    return json.dumps(value, default=default)


class Context:
    def __init__(self, request_id, deadline_ms, arn, identity, client_context):
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.invoked_function_arn = arn
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.identity = identity
        self.client_context = client_context
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)


class RequestIdFilter(logging.Filter):
    request_id = ""

    def filter(self, record):
        record.aws_request_id = RequestIdFilter.request_id
        return True


def setup_logging():
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def log_error(exc, body):
    lines = [f"[ERROR] {body['errorType']}: {body['errorMessage']}", "Traceback (most recent call last):"]
    lines.extend(line.rstrip("\n") for line in body["stackTrace"])
    sys.stdout.write("\r".join(lines) + "\n")
    sys.stdout.flush()


def load_handler(handler):
    module_path, dot, function = handler.rpartition(".")
    if not dot or not module_path or not function:
        raise RuntimeError_("Runtime.MalformedHandlerName", f"Bad handler '{handler}': not enough values to unpack (expected 2, got 1)")
    module_name = module_path.replace("/", ".")
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise RuntimeError_(
            "Runtime.BuiltInModuleConflict",
            f"Cannot use built-in module {module_name} as a handler module",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RuntimeError_("Runtime.ImportModuleError", f"Unable to import module '{module_path}': {e}") from None
    except SyntaxError as e:
        raise RuntimeError_("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_path}': {e}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise RuntimeError_("Runtime.HandlerNotFound", f"Handler '{function}' missing on module '{module_path}'")
    return fn


def main():
    client = Client(API)
    setup_logging()
    sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except Exception as exc:  # noqa: BLE001 - every init failure is reported
        body = error_body(exc)
        sys.stdout.write(f"[WARNING]\t{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z\t\tLAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code.\n")
        log_error(exc, body)
        error_type = {"Lambda-Runtime-Function-Error-Type": body["errorType"]}
        client.exchange([("POST", "/init/error", to_json(body).encode("utf-8"), {**JSON, **error_type})])
        sys.exit(1)
    depth = int(os.environ.get("KEYGATE_QUEUE_DEPTH", "0") or 0)
    # The previous invocation's answer, sent with the next poll.
    answer = []
    # Queued delivery: the first poll on the answers' connection (so that it is open, and
    # admitted, before any event comes), then `depth` polls kept open on a second one; events are
    # run strictly in the order they come, each once the previous answer is in the kernel's hands.
    events = Client(API) if depth > 0 else None
    while True:
        if events is None or events.sock is None and not answer:
            *_, (status, headers, raw) = client.exchange(answer + [("GET", "/invocation/next")])
            if events is not None:
                events.send([("GET", "/invocation/next")] * depth)
        else:
            if answer:
                fresh = client.send(answer)
                if fresh or len(answer[0][2]) > MAY_BE_REFUSED:
                    # On a connection keygate has not answered on yet, wait until it has (an
                    # answer on a connection never accepted would be lost if the process died);
                    # after a large answer too, which keygate may refuse with `connection: close`
                    # (over the limit, or over its budget for bodies) and then read nothing behind.
                    client.answer_all()
                else:
                    client.answers_ready()
                events.send([("GET", "/invocation/next")])
            status, headers, raw = events.answer()
        answer = []
        if status != 200:
            sys.stderr.write(f"keygate bootstrap: GET /invocation/next answered {status}\n")
            sys.exit(1)
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        trace = headers.get("lambda-runtime-trace-id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        RequestIdFilter.request_id = request_id

        def header_json(name):
            value = headers.get(name)
            try:
                return json.loads(value) if value else None
            except ValueError:
                return None

        deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0"))
        if events is not None and time.time() * 1000 >= deadline_ms:
            # Its time ran out while it waited behind another: keygate answered it already (504).
            body = {"errorMessage": "Task timed out before it started", "errorType": "Sandbox.Timedout"}
            answer = [("POST", f"/invocation/{request_id}/error", to_json(body).encode("utf-8"), JSON)]
            continue
        context = Context(
            request_id,
            deadline_ms,
            headers.get("lambda-runtime-invoked-function-arn"),
            header_json("lambda-runtime-cognito-identity"),
            header_json("lambda-runtime-client-context"),
        )
        try:
            result = handler(json.loads(raw), context)
            payload = to_json(result)
        except Exception as exc:  # noqa: BLE001 - the handler's failure is the invocation's
            body = error_body(exc, request_id)
            log_error(exc, body)
            answer = [("POST", f"/invocation/{request_id}/error", to_json(body).encode("utf-8"), JSON)]
            continue
        answer = [("POST", f"/invocation/{request_id}/response", payload.encode("utf-8"), JSON)]


main()
