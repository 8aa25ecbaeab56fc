#!/usr/bin/env python3
"""chfront: a small ClickHouse HTTP interface in front of the real ClickHouse
engine embedded by chdb-core (`from chdb import _chdb`), for development and
CI machines without Docker or a ClickHouse server.

The engine runs inside this process (chdb cannot listen on a port); this
process owns the data folder. Each request gets its own chdb connection to
that folder (cheap, ~0.3 ms), so `database`, settings and `USE`/`SET` never
leak between requests. At most CHFRONT_MAX_CONCURRENT (default 4) queries run
at once, guarded by a semaphore (chdb supports several connections to one
folder in one process; 4 roughly doubles small-insert throughput on 2 cores
compared with 1; set 1 to serialize everything). Request bodies are read
before a permit is taken.

Covered:
  * GET / and GET /ping (also HEAD) -> "Ok.\\n"; GET /replicas_status -> "Ok.\\n".
  * Queries from the `query` URL parameter and/or the body (POST, or GET
    with a body). Both present: URL query + "\\n" + body, as ClickHouse does.
    GET implies readonly=2, as in ClickHouse.
    multipart/form-data bodies with `query` and `param_*` fields (what the
    Rust crate sends for `.param()`).
  * Query parameters `param_NAME` (URL or multipart) -> `{NAME:Type}`.
  * `database` (or header X-ClickHouse-Database): USE for that request.
  * `default_format` (or header X-ClickHouse-Format): output format when
    the query has no FORMAT clause; TabSeparated otherwise.
  * Other URL parameters that are engine settings (checked against
    system.settings at startup) are applied with SET for that request only;
    bad values fail like in ClickHouse. Transport parameters (compress,
    decompress, query_id, session_id, user, password, role, quota_key,
    buffer_size, wait_end_of_query, ...) are accepted and ignored; unknown
    names are ignored and logged.
  * INSERT ... FORMAT X with the data in the body (Content-Length or
    Transfer-Encoding: chunked) or inline after the format name: the data
    bytes go to the engine's streaming insert (send_insert/insert_append),
    never through a text decode. INSERT ... VALUES and INSERT ... SELECT run
    as ordinary queries.
  * decompress=1 request bodies in ClickHouse's compressed block framing
    (LZ4 0x82, none 0x02, ZSTD 0x90; CityHash128 v1.0.2 checksums verified
    unless http_native_compression_disable_checksumming_on_decompress=1).
  * compress=1 responses in the same framing (LZ4 blocks of <= 1 MiB).
  * Request Content-Encoding gzip, deflate, lz4 (frame), zstd; responses
    encoded per Accept-Encoding (lz4, zstd, gzip, deflate) when
    enable_http_compression is on (the engine default, 1). The Rust crate
    `clickhouse` 0.15 sends `Accept-Encoding: lz4` and decodes LZ4 frames.
  * Errors: ClickHouse's own text, HTTP 400/403/404/500/501 by error name
    (like ClickHouse's HTTP handler), header X-ClickHouse-Exception-Code.
  * Headers X-ClickHouse-Summary (read/written rows and bytes, elapsed),
    X-ClickHouse-Format, X-ClickHouse-Query-Id, X-ClickHouse-Timezone.
  * HTTP/1.1 keep-alive (always an exact Content-Length; a connection whose
    request body could not be read is closed).

Clients checked against it: the Rust crate `clickhouse` (adstream and its
tests), curl, and clickhouse-connect 1.12 (Superset's ClickHouse driver; the
dashboard test in tests/browser/ drives it through Superset). What
clickhouse-connect sends, and how it is served: `SELECT version(),
timezone()` and `system.settings` (with its `readonly` column) at connect;
queries with ` FORMAT Native` appended (the engine writes Native); the
settings date_time_input_format, cast_string_to_dynamic_use_inference,
cancel_http_readonly_queries_on_client_close, send_progress_in_http_headers
and http_headers_progress_interval_ms as URL parameters (engine settings,
applied with SET); session_id, client_protocol_version, wait_end_of_query
and query_id (transport, accepted); `Authorization: Basic` (checked like
user/password when authentication is on); `Accept-Encoding: lz4,zstd,br,gzip,deflate` (answered with
lz4). It reads X-ClickHouse-Timezone and X-ClickHouse-Summary. Superset's
schema browser and column sync use system.tables, system.columns and
DESCRIBE, which the engine answers itself.

Not covered (honestly): one user only, and only when CHFRONT_USER or
CHFRONT_PASSWORD is set (then every query must present exactly those, by
X-ClickHouse-User/-Key headers, Basic auth or user/password parameters, or
fails with ClickHouse's Code 516 AUTHENTICATION_FAILED text, HTTP 403; /ping
stays open, as in ClickHouse); without them user/password are ignored;
unknown URL parameters are ignored where ClickHouse would fail with
UNKNOWN_SETTING; INSERT ... SELECT ... FROM input() with body data; no
HTTP sessions (session_id is ignored, so temporary tables and SET do not
outlive a request); results are buffered, not streamed, and no progress
headers are sent (send_progress_in_http_headers is accepted, has no
effect); no external data tables; no /play UI; no cancellation of a
running query when the client disconnects; exceptions are never sent in
the middle of a 200 body (everything is computed before replying); the
X-ClickHouse-Summary lacks result_rows. SQL features are whatever the
embedded engine (clickhouse-local inside chdb) supports: server-only parts
(Kafka engine, clusters/Distributed, replication/Keeper, users and quotas)
are not available. chdb's own setting defaults apply (e.g. async_insert=1,
which clickhouse-local does not act on: an INSERT is visible when it
returns).

Usage: chfront.py --data DIR [--host 127.0.0.1] [--port 8123] [--max-concurrent N]
Env: CLICKHOUSE_HOST, CLICKHOUSE_PORT, CHFRONT_MAX_CONCURRENT (4),
     CHFRONT_USER / CHFRONT_PASSWORD (unset: no authentication),
     CHFRONT_ACCESS_LOG (1: one log line per request; 0: errors and slow only),
     CHFRONT_TLS_CERT / CHFRONT_TLS_KEY (set: HTTPS only, with this PEM
     certificate and key, as ClickHouse's https_port; no plaintext on the port),
     CHFRONT_TLS_CLIENT_CA (set too: a client certificate signed by this CA
     is required, as ClickHouse's <verificationMode>strict</verificationMode>).
"""

import argparse
import json
import logging
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chwire  # noqa: E402
from chwire import ChError  # noqa: E402

log = logging.getLogger("chfront")
# One log line per request; CHFRONT_ACCESS_LOG=0 keeps only errors and requests > 1 s.
ACCESS_LOG = os.environ.get("CHFRONT_ACCESS_LOG", "1") not in ("0", "false", "no")

# ClickHouse's HTTP handler maps some error names to HTTP statuses.
STATUS_BY_ERROR = {}
for _n in ("CANNOT_PARSE_TEXT CANNOT_PARSE_ESCAPE_SEQUENCE CANNOT_PARSE_QUOTED_STRING "
           "CANNOT_PARSE_DATE CANNOT_PARSE_DATETIME CANNOT_PARSE_NUMBER "
           "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING CANNOT_PARSE_IPV4 CANNOT_PARSE_IPV6 "
           "CANNOT_PARSE_INPUT_ASSERTION_FAILED CANNOT_PARSE_UUID CANNOT_PARSE_BOOL "
           "CANNOT_PARSE_ELEMENT DUPLICATE_COLUMN ILLEGAL_COLUMN UNKNOWN_ELEMENT_IN_AST "
           "UNKNOWN_TYPE_OF_AST_NODE TOO_DEEP_AST TOO_BIG_AST UNEXPECTED_AST_STRUCTURE "
           "SYNTAX_ERROR INCORRECT_DATA TYPE_MISMATCH VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE "
           "BAD_ARGUMENTS CHECKSUM_DOESNT_MATCH CANNOT_DECOMPRESS "
           "UNKNOWN_COMPRESSION_METHOD UNEXPECTED_END_OF_FILE").split():
    STATUS_BY_ERROR[_n] = 400
for _n in ("UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE UNKNOWN_STORAGE "
           "UNKNOWN_DATABASE UNKNOWN_SETTING UNKNOWN_DIRECTION_OF_SORTING "
           "UNKNOWN_AGGREGATE_FUNCTION UNKNOWN_FORMAT UNKNOWN_DATABASE_ENGINE "
           "UNKNOWN_TYPE_OF_QUERY UNKNOWN_ROLE").split():
    STATUS_BY_ERROR[_n] = 404
STATUS_BY_ERROR.update({"READONLY": 403, "ACCESS_DENIED": 403, "NOT_IMPLEMENTED": 501,
                        "QUERY_IS_TOO_LARGE": 413, "REQUIRED_PASSWORD": 401,
                        "UNKNOWN_USER": 403, "WRONG_PASSWORD": 403, "AUTHENTICATION_FAILED": 403})

_ERR_CODE = re.compile(r"Code: (\d+)\.")
_ERR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")


def error_from_engine(e):
    """(code, name, text) from a chdb exception message."""
    text = str(e).strip()
    m = _ERR_CODE.search(text)
    code = int(m.group(1)) if m else 1001
    n = _ERR_NAME.search(text)
    name = n.group(1) if n else "STD_EXCEPTION"
    if not m:
        text = f"Code: 1001. DB::Exception: {text}. (STD_EXCEPTION)"
    return code, name, text


def content_type_for(fmt):
    f = (fmt or "").lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8"
    if f.startswith("json") or f.startswith("ndjson"):
        return "application/json; charset=UTF-8"
    if f in ("xml",):
        return "application/xml; charset=UTF-8"
    if f.startswith(("pretty", "vertical", "markdown", "values", "sqlinsert", "template",
                     "customseparated", "raw", "linea", "prometheus")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def sql_string(v):
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_ident(v):
    return "`" + v.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Engine:
    """One chdb engine bound to a data folder; one connection per request."""

    def __init__(self, path, max_concurrent=1):
        from chdb import _chdb  # the compiled engine; `chdb` itself is a thin wrapper
        self._chdb = _chdb
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self.max_concurrent = max_concurrent
        self.sem = threading.BoundedSemaphore(max_concurrent)
        # Held for the process lifetime: keeps the engine (and its folder) open.
        self.keeper = _chdb.connect(self.path)

        def scalar_rows(q):
            return self.keeper.query(q, "TSV").bytes().decode().splitlines()

        self.version = scalar_rows("SELECT version()")[0]
        self.timezone = scalar_rows("SELECT timezone()")[0]
        self.settings = {}
        for line in scalar_rows("SELECT name, value FROM system.settings"):
            k, _, v = line.partition("\t")
            self.settings[k] = v

    def setting_default(self, name, fallback):
        return self.settings.get(name, fallback)

    def run(self, *, database, settings, params, sql=None, insert=None, fmt):
        """Runs one request. `insert` = (head, fmt, data bytes) for a streaming
        insert, else `sql` is a text query. Returns (body bytes, summary dict)."""
        with self.sem:
            conn = self._chdb.connect(self.path)
            try:
                if database:
                    conn.query("USE " + sql_ident(database), "TSV")
                if settings:
                    conn.query("SET " + ", ".join(f"{k} = {sql_string(v)}"
                                                   for k, v in settings.items()), "TSV")
                if insert is not None:
                    head, ifmt, data = insert
                    h = conn.send_insert(head, ifmt)
                    try:
                        if data:
                            conn.insert_append(h, data)
                        r = conn.insert_done(h)
                    except BaseException:
                        try:
                            conn.insert_cancel(h)
                        except Exception:
                            pass
                        raise
                else:
                    r = conn.query(sql, fmt, params=params)
                out = r.bytes() if insert is None else b""
                summary = {
                    "read_rows": str(r.rows_read()),
                    "read_bytes": str(r.bytes_read()),
                    "written_rows": str(r.rows_written()),
                    "written_bytes": str(r.bytes_written()),
                    "total_rows_to_read": "0",
                    "result_bytes": str(len(out)),
                    "elapsed_ns": str(int(r.elapsed() * 1e9)),
                }
                return out, summary
            finally:
                conn.close()

    def close(self, timeout=30.0):
        """Waits for running queries (up to timeout), then closes the engine."""
        got = 0
        deadline = time.monotonic() + timeout
        while got < self.max_concurrent and time.monotonic() < deadline:
            if self.sem.acquire(timeout=0.2):
                got += 1
        self.keeper.close()


class BodyError(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chfront"
    timeout = 300  # idle keep-alive / slow body reads

    engine: Engine = None  # set in main()

    def version_string(self):
        return "chfront (ClickHouse %s via chdb-core)" % self.engine.version

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # http.server's own messages (errors)
        log.info("%s %s", self.address_string(), fmt % args)

    def log_request(self, code="-", size="-"):  # we log our own line instead
        pass

    # ---------------------------------------------------------------- I/O
    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise BodyError("connection closed inside chunked body")
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise BodyError(f"bad chunk size line {line[:40]!r}")
                if size == 0:
                    while True:  # trailers, up to the empty line
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise BodyError("connection closed inside chunk")
                parts.append(chunk)
                if self.rfile.readline(65537) not in (b"\r\n", b"\n"):
                    raise BodyError("missing CRLF after chunk")
            return parts[0] if len(parts) == 1 else b"".join(parts)
        cl = self.headers.get("Content-Length")
        if cl:
            try:
                n = int(cl)
            except ValueError:
                raise BodyError("bad Content-Length")
            data = self.rfile.read(n)
            if len(data) != n:
                raise BodyError("connection closed inside body")
            return data
        return b""

    def reply(self, status, body, headers=(), ctype="text/plain; charset=UTF-8"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        else:
            self.send_header("Keep-Alive", "timeout=%d" % self.timeout)
        # headers and (small) body in one write
        head = b"".join(self._headers_buffer) + b"\r\n"
        self._headers_buffer = []
        if self.command == "HEAD":
            body = b""
        if len(body) < 65536:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)
        self._status = status
        self._out = len(body)

    def reply_error(self, code, name, text, status=None, query_id=""):
        if status is None:
            status = STATUS_BY_ERROR.get(name, 500)
        hdrs = [("X-ClickHouse-Exception-Code", str(code))]
        if query_id:
            hdrs.append(("X-ClickHouse-Query-Id", query_id))
        self._err = text
        self.reply(status, (text + "\n").encode("utf-8", "replace"), hdrs)

    # ------------------------------------------------------------- routing
    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_HEAD(self):
        self.handle_any()

    def handle_any(self):
        t0 = time.monotonic()
        self._status, self._out, self._err, self._sql = 0, 0, "", ""
        nbody = 0
        try:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            try:
                body = self.read_body()
            except (BodyError, OSError) as e:
                self.close_connection = True
                self.reply_error(3, "UNEXPECTED_END_OF_FILE",
                                 f"Code: 3. DB::Exception: Cannot read request body: {e}. "
                                 "(UNEXPECTED_END_OF_FILE)")
                return
            nbody = len(body)
            if url.path not in ("/", "/query"):
                if url.path in ("/ping", "/replicas_status") and self.command in ("GET", "HEAD"):
                    self.reply(200, b"Ok.\n")
                else:
                    self.reply(404, f"There is no handle {url.path}\n\nUse / or /ping for "
                               "health checks.\nSend queries with POST or GET /?query=...\n"
                               .encode())
                return
            if self.command == "HEAD" or (self.command == "GET" and not body
                                          and "query" not in params):
                self.reply(200, b"Ok.\n")
                return
            self.run_query(params, body)
        except ChError as e:
            self.reply_error(e.code, e.name, str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # never leave a request without an answer
            log.exception("internal error")
            self.close_connection = True
            try:
                self.reply_error(1001, "STD_EXCEPTION",
                                 f"Code: 1001. DB::Exception: chfront: {e!r}. (STD_EXCEPTION)")
            except OSError:
                pass
        finally:
            ms = (time.monotonic() - t0) * 1000
            if not (ACCESS_LOG or self._err or ms > 1000):
                return
            sql = " ".join(self._sql[:160].split())
            log.info("%s %s %d in=%d out=%d %.1fms %s%s", self.command,
                     urlsplit(self.path).path, self._status, nbody,
                     self._out, ms, sql, (" ERR " + self._err[:300]) if self._err else "")

    # --------------------------------------------------------------- query
    # (user, password) every query must present; None: no authentication.
    credentials = None  # set in main()

    def run_query(self, params, body):
        eng = self.engine
        hdr = self.headers
        if self.credentials is not None:
            chwire.check_auth(*self.credentials, params, hdr)
        query_id = params.get("query_id") or str(uuid.uuid4())

        body = chwire.http_decode(body, hdr.get("Content-Encoding"))
        if params.get("decompress") in ("1", "true") and body:
            verify = params.get(
                "http_native_compression_disable_checksumming_on_decompress") not in ("1", "true")
            body = chwire.decode_blocks(body, verify=verify)
        ctype = hdr.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            fields = chwire.parse_multipart(body, ctype)
            body = b""
            for k, v in fields.items():
                params[k] = v.decode("utf-8")

        database = params.get("database") or hdr.get("X-ClickHouse-Database") or ""
        fmt = params.get("default_format") or hdr.get("X-ClickHouse-Format") or "TabSeparated"
        qparams, settings, ignored = chwire.classify_params(params, eng.settings)
        if ignored:
            log.info("ignoring unknown URL parameters: %s", ", ".join(ignored))
        if self.command == "GET" and "readonly" not in settings:
            settings["readonly"] = "2"  # ClickHouse: GET implies readonly

        url_q = params.get("query", "")
        sql, insert = None, None
        if url_q:
            sp = chwire.split_insert(url_q)
            if sp:
                head, ifmt, end = sp
                rest = url_q[end:] + ("\n" if body else "")
                prefix = rest[chwire.data_start(rest, 0):].encode("utf-8")
                insert = (head, ifmt, prefix + body if prefix else body)
            else:
                sql = url_q + ("\n" + body.decode("utf-8", "replace") if body else "")
            self._sql = url_q
        elif body:
            # Find the statement without decoding the data that may follow it.
            peek = body[:65536].decode("latin-1")
            sp = chwire.split_insert(peek) if chwire.first_word(peek) == "INSERT" else None
            if sp:
                head, ifmt, end = sp
                insert = (body[:len(head)].decode("utf-8"), ifmt,
                          body[chwire.data_start(peek, end):])
                self._sql = insert[0] + " FORMAT " + ifmt
            else:
                sql = body.decode("utf-8", "replace")
                self._sql = sql
        if not sql and not insert:
            raise ChError(62, "SYNTAX_ERROR", "Empty query")

        if insert is not None:
            out_fmt = fmt
        else:
            out_fmt = chwire.output_format(sql) or fmt

        try:
            out, summary = eng.run(database=database, settings=settings, params=qparams,
                                   sql=sql, insert=insert, fmt=fmt)
        except ChError:
            raise
        except Exception as e:
            code, name, text = error_from_engine(e)
            if name == "READONLY" and self.command == "GET":
                text = text.replace(" (READONLY)", " For queries over HTTP, method GET"
                                    " implies readonly. You should use method POST for"
                                    " modifying queries. (READONLY)", 1)
            self.reply_error(code, name, text, query_id=query_id)
            return

        headers = [
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Format", out_fmt),
            ("X-ClickHouse-Timezone", eng.timezone),
            ("X-ClickHouse-Server-Display-Name", "chfront"),
            ("X-ClickHouse-Summary", json.dumps(summary, separators=(",", ":"))),
        ]
        if params.get("compress") in ("1", "true"):
            out = chwire.encode_blocks(out)
        else:
            http_comp = settings.get("enable_http_compression",
                                     eng.setting_default("enable_http_compression", "0"))
            enc = (chwire.choose_encoding(hdr.get("Accept-Encoding"))
                   if http_comp in ("1", "true") else None)
            if enc:
                level = int(settings.get("http_zlib_compression_level",
                                         eng.setting_default("http_zlib_compression_level", "3")))
                out = chwire.http_encode(out, enc, level)
                headers.append(("Content-Encoding", enc))
        self.reply(200, out, headers, content_type_for(out_fmt))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    # ssl.SSLContext when serving HTTPS (CHFRONT_TLS_CERT), else None.
    tls = None

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake happens on the handler thread's first read, so
            # a slow or plaintext client never holds up the accept loop; a
            # failed handshake ends that connection only.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, (ssl.SSLError, ConnectionError)):
            log.info("TLS: connection from %s refused: %s", client_address[0], err)
            return
        super().handle_error(request, client_address)


def tls_context():
    """The server's TLS context from CHFRONT_TLS_*, or None."""
    cert, key = os.environ.get("CHFRONT_TLS_CERT"), os.environ.get("CHFRONT_TLS_KEY")
    if not cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key or None)
    client_ca = os.environ.get("CHFRONT_TLS_CLIENT_CA")
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default=os.environ.get("CLICKHOUSE_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("CLICKHOUSE_PORT", "8123")))
    ap.add_argument("--data", required=True, help="data folder owned by this process")
    ap.add_argument("--max-concurrent", type=int,
                    default=int(os.environ.get("CHFRONT_MAX_CONCURRENT", "4")))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")

    httpd = Server((args.host, args.port), Handler)  # bind first: port errors fail fast
    httpd.tls = tls_context()
    engine = Engine(args.data, max(1, args.max_concurrent))
    Handler.engine = engine
    if os.environ.get("CHFRONT_PASSWORD") is not None or os.environ.get("CHFRONT_USER"):
        Handler.credentials = (os.environ.get("CHFRONT_USER") or "default",
                               os.environ.get("CHFRONT_PASSWORD", ""))
        log.info("authentication on: user %s", Handler.credentials[0])
    log.info("chfront %s: ClickHouse %s (chdb-core) data=%s listening on %s:%d%s",
             "pid %d" % os.getpid(), engine.version, engine.path, args.host, args.port,
             "" if httpd.tls is None else " (HTTPS%s)" % (
                 ", client certificates required" if httpd.tls.verify_mode == ssl.CERT_REQUIRED else ""))

    def stop(signum, _frame):
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        engine.close()
        log.info("stopped")


if __name__ == "__main__":
    main()
