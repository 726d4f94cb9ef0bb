// keygate's Node.js runtime bootstrap, run as `node -e <this file>` with the task root as the
// working directory. It does what AWS's runtime interface client (aws-lambda-ric) does for a
// handler, over the Lambda Runtime API keygate serves on AWS_LAMBDA_RUNTIME_API:
// - resolves `_HANDLER` (`dir/module.export.path`) as Lambda does: the extensionless file, then
//   `.js` (require, or import() under "type": "module"), `.mjs`, `.cjs`, then require.resolve;
// - runs init once per process (module top level, awaited for ESM); a failure goes to
//   /runtime/init/error and the process exits;
// - calls `handler(event, context, callback)`: a returned promise, `callback`, or
//   `context.succeed/fail/done`, first answer wins; `callback(null, r)` waits for the event loop
//   to drain unless `context.callbackWaitsForEmptyEventLoop` is false;
// - reports errors as `{errorType, errorMessage, trace}`; an uncaught exception or unhandled
//   rejection fails the invocation, then the process exits (129, 128) and keygate replaces it;
// - prefixes console output with the time, the request id and the level, as Lambda does;
// - with KEYGATE_QUEUE_DEPTH = Q (one invocation at a time), keeps Q polls open ahead of the
//   event it runs, on a second connection, and runs the events strictly in the order they come,
//   each only once the previous answer is written to the socket (so keygate knows which event
//   may have started), skipping one whose deadline passed while it waited.
// Pinned by crates/keygate-functions/tests/functions/node.rs.
'use strict';

const net = require('net');
const path = require('path');
const fs = require('fs');
const util = require('util');
const { pathToFileURL } = require('url');

const API = process.env.AWS_LAMBDA_RUNTIME_API || '';
const [HOST, PORT] = (() => {
  const i = API.lastIndexOf(':');
  return [API.slice(0, i), Number(API.slice(i + 1))];
})();
const SLOTS = Math.max(1, Number(process.env.AWS_LAMBDA_MAX_CONCURRENCY) || 1);
const QUEUE_DEPTH = SLOTS === 1 ? Math.max(0, Number(process.env.KEYGATE_QUEUE_DEPTH) || 0) : 0;
const PREFIX = '/2018-06-01/runtime';
// A request body over this size may be refused with `connection: close` (see `request`).
const MAY_BE_REFUSED = 1024 * 1024;
const TASK_ROOT = process.env.LAMBDA_TASK_ROOT || process.cwd();

// The request id console lines carry (`undefined` before the first invocation, as on Lambda).
let currentRequestId;

// One keep-alive connection to the Runtime API; each poll loop has its own. Requests may be
// pipelined (answers come in order): an answer and the next `/next` leave in one write, so the
// process and keygate wake each other once per invocation, not twice (each wakeup is a context
// switch between two processes, the most expensive part of an invocation on one CPU). A few
// lines of HTTP/1.1 instead of Node's http client, whose objects and parser cost tens of
// microseconds per request: the Runtime API is keygate's own server, which always answers with
// Content-Length (anything else is refused). A connection with nothing pending is unref'd, so
// that it does not keep the event loop alive (callbackWaitsForEmptyEventLoop waits for the loop
// to drain).
// With `passive`, requests do not keep the event loop alive (the queued polls: the loop must
// still drain while a handler runs); the poll loop holds it while it waits ([`hold`]). Without
// `cork`, each request leaves at once.
class Connection {
  constructor({ passive = false, cork = true } = {}) {
    this.socket = null;
    this.buffer = null;
    this.pending = [];
    this.corked = false;
    this.passive = passive;
    this.cork = cork;
  }

  hold(held) {
    if (!this.socket) return;
    if (held) this.socket.ref();
    else this.socket.unref();
  }

  connect() {
    const socket = net.createConnection({ host: HOST, port: PORT });
    socket.setNoDelay(true);
    // Events of a socket already replaced (closed after `connection: close`) are ignored.
    socket.on('data', (chunk) => this.socket === socket && this.received(chunk));
    socket.on('error', (e) => this.socket === socket && this.failed(e));
    socket.on('close', () => {
      if (this.socket === socket) this.failed(new Error('the Runtime API closed the connection'));
    });
    this.socket = socket;
    this.buffer = null;
    this.answered = 0;
  }

  // Whether nothing has been answered on this connection yet (keygate may not even have
  // accepted it): a new one when the last was closed.
  isFresh() {
    return !this.socket || this.answered === 0;
  }

  failed(err) {
    const pending = this.pending;
    this.pending = [];
    if (this.socket) this.socket.destroy();
    this.socket = null;
    for (const p of pending) p.reject(err);
  }

  // `written` is called once the request is in the kernel's hands and no large request ahead of
  // it on this connection is still unanswered: keygate may refuse a large body (over the limit,
  // or over its budget for bodies) with `connection: close`, and then reads nothing behind it.
  request(method, route, body, headers, written) {
    return new Promise((resolve, reject) => {
      let head = `${method} ${PREFIX}${route} HTTP/1.1\r\nhost: ${API}\r\n`;
      if (headers) for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
      const data = body
        ? Buffer.concat([Buffer.from(`${head}content-length: ${body.length}\r\n\r\n`, 'latin1'), body])
        : head + '\r\n';
      const large = data.length > MAY_BE_REFUSED;
      const entry = { resolve, reject, data, written, inKernel: false, large };
      this.pending.push(entry);
      this.send(entry);
    });
  }

  send(entry) {
    if (!this.socket) this.connect();
    if (this.passive) this.socket.unref();
    else this.socket.ref();
    // Writes made in the same turn of the event loop (an answer, then the next poll) leave
    // together.
    if (this.cork && !this.corked) {
      this.corked = true;
      this.socket.cork();
      const socket = this.socket;
      setImmediate(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    // Only a request someone waits on to be written needs to hear of it.
    const done = entry.written
      ? (err) => {
          if (err) return;
          entry.inKernel = true;
          this.tellWritten();
        }
      : undefined;
    this.socket.write(entry.data, 'latin1', done);
  }

  // Calls `written` of the requests in the kernel's hands with no large one unanswered ahead.
  tellWritten() {
    for (const entry of this.pending) {
      if (entry.written && entry.inKernel) {
        const written = entry.written;
        entry.written = undefined;
        written();
      }
      if (entry.large) return;
    }
  }

  received(chunk) {
    this.buffer = this.buffer ? Buffer.concat([this.buffer, chunk]) : chunk;
    while (this.buffer && this.pending.length > 0 && this.socket) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = this.buffer.toString('latin1', 0, end).split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const colon = lines[i].indexOf(':');
        if (colon > 0) headers[lines[i].slice(0, colon).trim().toLowerCase()] = lines[i].slice(colon + 1).trim();
      }
      if (headers['transfer-encoding'] || !('content-length' in headers)) {
        this.failed(new Error('the Runtime API answered without Content-Length'));
        return;
      }
      const length = Number(headers['content-length']);
      if (this.buffer.length < end + 4 + length) return;
      const body = Buffer.from(this.buffer.subarray(end + 4, end + 4 + length));
      const rest = this.buffer.subarray(end + 4 + length);
      this.buffer = rest.length ? rest : null;
      const pending = this.pending.shift();
      this.answered++;
      if (headers.connection === 'close') {
        // keygate read nothing pipelined behind this answer (RFC 9112, 9.6): send it again on a
        // new connection. Its `written` is dropped: the request is done once it is answered.
        const socket = this.socket;
        const behind = this.pending;
        this.socket = null;
        this.buffer = null;
        this.pending = [];
        socket.destroy();
        for (const entry of behind) {
          entry.written = undefined;
          this.pending.push(entry);
          this.send(entry);
        }
      } else if (this.pending.length === 0) {
        if (!this.passive) this.socket.unref();
      } else if (pending.large) {
        this.tellWritten();
      }
      pending.resolve({ status, headers, body });
    }
  }

  post(route, payload, headers, written) {
    return this.request(
      'POST',
      route,
      Buffer.from(payload),
      { 'content-type': 'application/json', ...headers },
      written,
    );
  }
}

class RuntimeError extends Error {
  constructor(name, message) {
    super(message);
    this.name = name;
  }
}

function errorBody(err) {
  if (err instanceof Error) {
    const stack = typeof err.stack === 'string' ? err.stack.split('\n') : [];
    return { errorType: err.name || 'Error', errorMessage: err.message, trace: stack };
  }
  return { errorType: typeof err, errorMessage: String(err), trace: [] };
}

// `Invoke Error`, `Init Error`, `Uncaught Exception` lines as Lambda logs them.
function logError(label, body) {
  const copy = { errorType: body.errorType, errorMessage: body.errorMessage, stack: body.trace };
  console.error(`${label} \t${JSON.stringify(copy)}`);
}

// console.* as Lambda's LogPatch writes it: `time\trequestId\tLEVEL\tmessage`, inner line breaks
// as `\r` so that one call stays one line.
function patchConsole() {
  const levels = { log: 'INFO', info: 'INFO', warn: 'WARN', error: 'ERROR', debug: 'DEBUG' };
  for (const [method, level] of Object.entries(levels)) {
    console[method] = (...args) => {
      const message = util.format(...args).replace(/\n/g, '\r');
      process.stdout.write(`${new Date().toISOString()}\t${currentRequestId}\t${level}\t${message}\n`);
    };
  }
  console.trace = (...args) => {
    const err = new Error(util.format(...args));
    err.name = 'Trace';
    const message = (err.stack || '').replace(/\n/g, '\r');
    process.stdout.write(`${new Date().toISOString()}\t${currentRequestId}\tTRACE\t${message}\n`);
  };
}

// ---- handler resolution (as aws-lambda-ric's UserFunction.js) ----

function isFile(p) {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

// Whether the nearest package.json above `dir` says "type": "module".
function isEsmPackage(dir) {
  for (let d = dir; ; d = path.dirname(d)) {
    if (path.basename(d) === 'node_modules') return false;
    const pkg = path.join(d, 'package.json');
    if (isFile(pkg)) {
      try {
        return JSON.parse(fs.readFileSync(pkg, 'utf8')).type === 'module';
      } catch {
        return false;
      }
    }
    if (path.dirname(d) === d) return false;
  }
}

async function loadModule(file, moduleName, moduleRoot) {
  if (isFile(file)) return require(file);
  const esm = isEsmPackage(path.dirname(file));
  if (!esm && isFile(file + '.js')) return require(file + '.js');
  if (esm && isFile(file + '.js')) return import(pathToFileURL(file + '.js').href);
  if (isFile(file + '.mjs')) return import(pathToFileURL(file + '.mjs').href);
  if (isFile(file + '.cjs')) return require(file + '.cjs');
  const resolved = require.resolve(moduleName, {
    paths: [TASK_ROOT, path.resolve(TASK_ROOT, moduleRoot)],
  });
  return require(resolved);
}

async function loadHandler(handlerString) {
  if (handlerString.includes('..')) {
    throw new RuntimeError(
      'Runtime.MalformedHandlerName',
      `'${handlerString}' is not a valid handler name. Use absolute paths when specifying root ` +
        'directories in handler names.',
    );
  }
  const base = path.basename(handlerString);
  const moduleRoot = handlerString.slice(0, handlerString.length - base.length);
  const dot = base.indexOf('.');
  if (dot < 0) {
    throw new RuntimeError('Runtime.MalformedHandlerName', `Bad handler ${handlerString}`);
  }
  const moduleName = base.slice(0, dot);
  const exportPath = base.slice(dot + 1);
  const file = path.resolve(TASK_ROOT, moduleRoot, moduleName);
  let mod;
  try {
    mod = await loadModule(file, moduleName, moduleRoot);
  } catch (e) {
    if (e instanceof SyntaxError) {
      throw new RuntimeError('Runtime.UserCodeSyntaxError', `${e.name}: ${e.message}`);
    }
    if (e && e.code === 'MODULE_NOT_FOUND') {
      throw new RuntimeError('Runtime.ImportModuleError', `Error: ${e.message}`);
    }
    throw e;
  }
  const handler = exportPath.split('.').reduce((o, k) => (o == null ? undefined : o[k]), mod);
  if (typeof handler !== 'function') {
    throw new RuntimeError(
      'Runtime.HandlerNotFound',
      `${moduleName}.${exportPath} is undefined or not exported`,
    );
  }
  return handler;
}

// aws-sdk v2 (the seed's `new AWS.DynamoDB.DocumentClient()`) reads no AWS_ENDPOINT_URL_*
// variable: point the handler's own copy at the DynamoDB keygate provides. Node's module cache
// makes the handler's `require('aws-sdk')` this very object, so its clients are created with
// the endpoint and the handler's code needs no change. SDK v3, boto3 and aws-sdk-rust read the
// variables themselves.
function pointAwsSdkV2(handlerString) {
  const endpoint = process.env.AWS_ENDPOINT_URL_DYNAMODB;
  if (!endpoint || handlerString.includes('..')) return;
  const moduleRoot = path.resolve(TASK_ROOT, path.dirname(handlerString));
  let resolved;
  try {
    resolved = require.resolve('aws-sdk', { paths: [moduleRoot, TASK_ROOT] });
  } catch {
    return;
  }
  const AWS = require(resolved);
  if (!AWS || !AWS.config || typeof AWS.config.update !== 'function') return;
  const streams = process.env.AWS_ENDPOINT_URL_DYNAMODB_STREAMS || endpoint;
  AWS.config.update({ dynamodb: { endpoint }, dynamodbstreams: { endpoint: streams } });
}

// ---- invocations ----

// Answers waiting for the event loop to drain (`callback(null, r)` with
// callbackWaitsForEmptyEventLoop), and invocations whose handler has not answered at all.
const waitingForDrain = new Set();

function parseJsonHeader(value) {
  if (!value) return undefined;
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

// Runs one invocation; settles once its answer is posted (`queued`: written to the socket).
function invoke(handler, next, conn, queued) {
  const id = next.headers['lambda-runtime-aws-request-id'];
  const deadline = Number(next.headers['lambda-runtime-deadline-ms']);
  const trace = next.headers['lambda-runtime-trace-id'];
  if (trace) process.env._X_AMZN_TRACE_ID = trace;
  else delete process.env._X_AMZN_TRACE_ID;
  currentRequestId = id;

  return new Promise((settled) => {
    let posted;
    const answer = (err, result) => {
      if (posted) return posted;
      waitingForDrain.delete(entry);
      let route;
      let payload;
      if (err !== undefined && err !== null) {
        const body = errorBody(err);
        logError('Invoke Error', body);
        route = `/invocation/${id}/error`;
        payload = JSON.stringify(body);
      } else {
        try {
          payload = JSON.stringify(result === undefined ? null : result);
          route = `/invocation/${id}/response`;
        } catch (e) {
          route = `/invocation/${id}/error`;
          payload = JSON.stringify({
            errorType: 'Runtime.SerializationError',
            errorMessage: `Unable to stringify response body: ${e.message}`,
            trace: [],
          });
        }
      }
      // After an uncaught exception the process exits behind this answer: keygate hands it no
      // more events (one already polled for would be taken for started, and lost).
      const headers = crashing ? { 'keygate-runtime-exiting': '1' } : undefined;
      // A queued event starts only once this answer is written, or, on a connection keygate
      // has not answered on yet (made again after one was closed), once it is answered: an
      // answer on a connection keygate never accepted would be lost if the process died, and
      // keygate would take the next event for never started.
      const onWritten = queued && !conn.isFresh() ? () => settled() : undefined;
      posted = conn.post(route, payload, headers, onWritten).then(
        () => {},
        (e) => fatal('cannot post the answer to the Runtime API', e),
      );
      // The next poll goes out behind the answer, in the same write. A queued one that was
      // sent again (keygate closed the connection ahead of it) starts once it is answered.
      if (!queued) settled();
      else posted.then(() => settled());
      return posted;
    };
    const entry = { id, onDrain: () => answer(null, undefined) };

    const context = {
      callbackWaitsForEmptyEventLoop: true,
      functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
      functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
      invokedFunctionArn: next.headers['lambda-runtime-invoked-function-arn'],
      memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
      awsRequestId: id,
      logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
      logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
      identity: parseJsonHeader(next.headers['lambda-runtime-cognito-identity']),
      clientContext: parseJsonHeader(next.headers['lambda-runtime-client-context']),
      getRemainingTimeInMillis: () => deadline - Date.now(),
      succeed: (result) => called || answer(null, result),
      fail: (err) => called || answer(err === undefined || err === null ? new Error('handled') : err),
      done: (err, result) => called || answer(err, result),
    };
    let called = false;
    const callback = (err, result) => {
      // The first of callback/succeed/fail/done wins, even while it waits for the loop.
      if (called || posted) return;
      called = true;
      if (err !== undefined && err !== null) return answer(err);
      // With several invocations at once the loop never drains (the others poll): answer now.
      if (!context.callbackWaitsForEmptyEventLoop || SLOTS > 1) return answer(null, result);
      // Posted once nothing else is left to run (see the `beforeExit` handler).
      entry.onDrain = () => answer(null, result);
    };
    current.set(id, answer);
    waitingForDrain.add(entry);
    if (queued && Date.now() >= deadline) {
      // Its time ran out while it waited behind another: keygate answered it already (504).
      answer(new RuntimeError('Sandbox.Timedout', 'Task timed out before it started'));
      return;
    }
    let returned;
    try {
      returned = handler(JSON.parse(next.body.toString('utf8')), context, callback);
    } catch (e) {
      answer(e);
      return;
    }
    if (returned && typeof returned.then === 'function') {
      entry.onDrain = () =>
        answer(new RuntimeError('Runtime.NodeJsExit', 'Runtime exited without providing a reason'));
      returned.then(
        (result) => answer(null, result),
        (err) => answer(err === undefined || err === null ? new Error('undefined') : err),
      );
    }
  }).finally(() => current.delete(id));
}

// Invocations in flight, by request id: an uncaught exception fails them.
const current = new Map();
// Set once the process is exiting after an uncaught exception.
let crashing = false;

// Nothing is left to run but what waits for the loop to drain: answer those.
process.on('beforeExit', () => {
  for (const entry of [...waitingForDrain]) entry.onDrain();
});

function fatal(what, err) {
  process.stderr.write(`keygate bootstrap: ${what}: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}

// An uncaught exception or unhandled rejection: the invocations in flight fail with it, then
// the process exits as Lambda's runtime does (keygate starts a fresh one).
function crash(err, code) {
  // No poll goes out behind these answers, and they say the process exits (with queued polls
  // open): an event handed to a process about to exit would be lost with it, while one never
  // taken, or queued and never started, is run by the next process.
  crashing = true;
  if (current.size === 0) logError('Uncaught Exception', errorBody(err));
  const posts = [...current.values()].map((answer) => answer(err));
  Promise.allSettled(posts).then(() => process.exit(code));
}

async function poll(handler) {
  const conn = new Connection();
  while (!crashing) {
    const next = await conn.request('GET', '/invocation/next');
    if (next.status !== 200) {
      fatal(`GET /invocation/next answered ${next.status}`, next.body.toString('utf8'));
    }
    await invoke(handler, next, conn);
  }
}

// Queued delivery: the first poll on the answers' connection (so that it is open, and admitted,
// before any event comes), then QUEUE_DEPTH polls kept open on the events' connection, taken in
// order.
async function pollQueued(handler) {
  const answers = new Connection({ cork: false });
  const events = new Connection({ passive: true, cork: false });
  const ahead = [];
  const poll = () => {
    const p = events.request('GET', '/invocation/next');
    p.catch(() => {}); // Awaited in turn; a failed connection is fatal there.
    ahead.push(p);
  };
  let next = await answers.request('GET', '/invocation/next');
  for (let i = 0; i < QUEUE_DEPTH; i++) poll();
  while (!crashing) {
    if (next.status !== 200) {
      fatal(`GET /invocation/next answered ${next.status}`, next.body.toString('utf8'));
    }
    await invoke(handler, next, answers, true);
    if (crashing) return;
    poll();
    events.hold(true);
    next = await ahead.shift();
    events.hold(false);
  }
}

async function main() {
  patchConsole();
  let handler;
  try {
    pointAwsSdkV2(process.env._HANDLER || '');
    handler = await loadHandler(process.env._HANDLER || '');
  } catch (err) {
    const body = errorBody(err);
    logError('Init Error', body);
    await new Connection().post('/init/error', JSON.stringify(body), {
      'lambda-runtime-function-error-type': body.errorType,
    }).catch(() => {});
    process.exit(129);
  }
  process.on('uncaughtException', (err) => crash(err, 129));
  process.on('unhandledRejection', (err) => crash(err, 128));
  if (QUEUE_DEPTH > 0) return pollQueued(handler);
  const loops = [];
  for (let i = 0; i < SLOTS; i++) loops.push(poll(handler));
  await Promise.all(loops);
}

main().catch((e) => fatal('failed', e));
