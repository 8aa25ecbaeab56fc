"""Wire-level helpers for chfront: ClickHouse's compressed block framing,
HTTP content encodings, URL parameters, multipart bodies and a tiny SQL lexer that finds the
`FORMAT <name>` clause of an INSERT (so the data after it can be fed to the
engine as bytes, never decoded as text).

No engine code here, so this module is unit-testable on its own
(see test_chwire.py).
"""

import gzip
import re
import zlib

import lz4.block
import lz4.frame
from clickhouse_cityhash.cityhash import CityHash128

try:  # optional: ZSTD blocks (0x90) and `Content-Encoding: zstd`
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None


class ChError(Exception):
    """An error reported to the client the way ClickHouse reports it."""

    def __init__(self, code, name, message):
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.code = code
        self.name = name


# --------------------------------------------------------------------------
# Native compressed block framing (`decompress=1` request bodies and
# `compress=1` responses):
#   [16 bytes checksum][1 byte method][u32 LE size incl. 9-byte header]
#   [u32 LE uncompressed size][payload]
# checksum = CityHash128 v1.0.2 of the block from the method byte to the end,
# stored as two LE u64 words, high word first (the Rust crate computes
# `cityhash_102_128(block).rotate_right(64)` and writes it as LE u128).
# --------------------------------------------------------------------------

METHOD_NONE = 0x02
METHOD_LZ4 = 0x82
METHOD_ZSTD = 0x90
_HEADER = 9
_MASK64 = (1 << 64) - 1


def block_checksum(block):
    h = CityHash128(block)
    return (h >> 64).to_bytes(8, "little") + (h & _MASK64).to_bytes(8, "little")


def decode_blocks(buf, verify=True):
    """Decompress a whole body of compressed blocks; returns bytes."""
    mv = memoryview(buf)
    n = len(mv)
    pos = 0
    out = []
    while pos < n:
        if n - pos < 16 + _HEADER:
            raise ChError(3, "UNEXPECTED_END_OF_FILE",
                          f"Truncated compressed block header at offset {pos}")
        method = mv[pos + 16]
        size = int.from_bytes(mv[pos + 17:pos + 21], "little")
        usize = int.from_bytes(mv[pos + 21:pos + 25], "little")
        if size < _HEADER or pos + 16 + size > n:
            raise ChError(3, "UNEXPECTED_END_OF_FILE",
                          f"Compressed block at offset {pos} claims {size} bytes, "
                          f"only {n - pos - 16} left")
        block = mv[pos + 16:pos + 16 + size]
        if verify:
            got = block_checksum(block)
            want = bytes(mv[pos:pos + 16])
            if got != want:
                raise ChError(40, "CHECKSUM_DOESNT_MATCH",
                              "Checksum doesn't match: corrupted data. Reference: "
                              f"{want.hex()}. Actual: {got.hex()}. Size of compressed "
                              f"block: {size}")
        payload = block[_HEADER:]
        try:
            if method == METHOD_LZ4:
                data = lz4.block.decompress(payload, uncompressed_size=usize)
            elif method == METHOD_NONE:
                data = bytes(payload)
            elif method == METHOD_ZSTD and zstandard is not None:
                data = zstandard.ZstdDecompressor().decompress(
                    payload, max_output_size=usize)
            else:
                raise ChError(89, "UNKNOWN_COMPRESSION_METHOD",
                              f"Unknown compression method: {method:#04x}")
        except ChError:
            raise
        except Exception as e:  # lz4/zstd errors
            raise ChError(271, "CANNOT_DECOMPRESS", f"Cannot decompress block: {e}")
        if len(data) != usize:
            raise ChError(271, "CANNOT_DECOMPRESS",
                          f"Decompressed {len(data)} bytes, header says {usize}")
        out.append(data)
        pos += 16 + size
    return out[0] if len(out) == 1 else b"".join(out)


def encode_blocks(data, block_size=1 << 20):
    """LZ4 blocks in the native framing (what ClickHouse sends for compress=1)."""
    out = []
    mv = memoryview(data)
    for i in range(0, len(mv), block_size):
        chunk = mv[i:i + block_size]
        comp = lz4.block.compress(chunk, store_size=False)
        head = bytes([METHOD_LZ4]) + (_HEADER + len(comp)).to_bytes(4, "little") \
            + len(chunk).to_bytes(4, "little")
        body = head + comp
        out.append(block_checksum(body))
        out.append(body)
    return b"".join(out)


# --------------------------------------------------------------------------
# HTTP Content-Encoding / Accept-Encoding
# --------------------------------------------------------------------------

HTTP_ENCODINGS = ("lz4", "zstd", "gzip", "deflate") if zstandard else ("lz4", "gzip", "deflate")


def choose_encoding(accept):
    """Pick the encoding for a response from an Accept-Encoding header value
    (highest q wins, ties in the client's order). None = identity."""
    best, best_q = None, 0.0
    for item in (accept or "").split(","):
        parts = item.strip().split(";")
        name = parts[0].strip().lower()
        q = 1.0
        for p in parts[1:]:
            p = p.strip()
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if name == "x-gzip":
            name = "gzip"
        if name in HTTP_ENCODINGS and q > best_q:
            best, best_q = name, q
    return best


def http_encode(data, enc, level=3):
    if enc == "gzip":
        return gzip.compress(data, compresslevel=max(1, min(9, level)), mtime=0)
    if enc == "deflate":  # HTTP "deflate" is the zlib format
        return zlib.compress(data, max(1, min(9, level)))
    if enc == "lz4":  # LZ4 frame format, like ClickHouse's HTTP lz4 encoding
        return lz4.frame.compress(data)
    if enc == "zstd":
        return zstandard.ZstdCompressor(level=level).compress(data)
    return data


def http_decode(data, enc):
    enc = (enc or "").strip().lower()
    if enc in ("", "identity", "none"):
        return data
    try:
        if enc in ("gzip", "x-gzip"):
            return gzip.decompress(data)
        if enc == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:
                return zlib.decompress(data, -15)  # raw deflate
        if enc == "lz4":
            return lz4.frame.decompress(data)
        if enc == "zstd" and zstandard is not None:
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except Exception as e:
        raise ChError(271, "CANNOT_DECOMPRESS", f"Cannot decode {enc} request body: {e}")
    raise ChError(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown HTTP Content-Encoding: {enc}")


# --------------------------------------------------------------------------
# URL parameters
# --------------------------------------------------------------------------

# Parameters ClickHouse handles in its HTTP layer, not engine settings;
# accepted and ignored unless chfront handles them explicitly (query,
# database, default_format, compress, decompress, query_id). Sessions are not
# kept, so session_* are accepted without effect; clickhouse-connect sends a
# session_id, client_protocol_version and wait_end_of_query with its queries.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "compress", "decompress",
    "query_id", "session_id", "session_timeout", "session_check", "close_session",
    "user", "password", "quota_key", "role", "stacktrace", "buffer_size",
    "wait_end_of_query", "client_protocol_version", "with_stacktrace",
})


def classify_params(params, setting_names):
    """Splits URL (or multipart) parameters into (query parameters without
    the `param_` prefix, engine settings to SET for the request, names that
    are neither). Transport parameters are in none of the three."""
    qparams, settings, ignored = {}, {}, []
    for k, v in params.items():
        if k.startswith("param_"):
            qparams[k[6:]] = v
        elif k in TRANSPORT_PARAMS:
            continue
        elif k in setting_names:
            settings[k] = v
        else:
            ignored.append(k)
    return qparams, settings, ignored


# --------------------------------------------------------------------------
# multipart/form-data (the Rust crate sends `query` + `param_*` this way when
# `.param()` is used)
# --------------------------------------------------------------------------

_CD_NAME = re.compile(rb'name="([^"]*)"', re.I)
_CD_FILENAME = re.compile(rb'filename="', re.I)


def parse_multipart(body, content_type):
    """Returns {field name: bytes}. File parts (external tables) are refused."""
    m = re.search(r'boundary="?([^";]+)"?', content_type, re.I)
    if not m:
        raise ChError(36, "BAD_ARGUMENTS", "multipart/form-data without boundary")
    delim = b"--" + m.group(1).encode("latin-1")
    fields = {}
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        if part.startswith(b"\r\n"):
            part = part[2:]
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if value.endswith(b"\r\n"):
            value = value[:-2]
        if _CD_FILENAME.search(head):
            raise ChError(48, "NOT_IMPLEMENTED",
                          "chfront does not support external data (multipart file parts)")
        nm = _CD_NAME.search(head)
        if nm:
            fields[nm.group(1).decode("utf-8")] = value
    return fields


# --------------------------------------------------------------------------
# SQL lexing: just enough to find top-level keywords outside strings,
# quoted identifiers, comments and parentheses.
# --------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<str>'(?:[^'\\]|\\.|'')*(?:'|\Z))
  | (?P<qid>"(?:[^"\\]|\\.|"")*(?:"|\Z)|`(?:[^`\\]|\\.|``)*(?:`|\Z))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
  | (?P<other>.)
""", re.S | re.X)


def _tokens(sql, pos=0):
    """Yields (kind, start, end, depth) for non-space, non-comment tokens."""
    depth = 0
    n = len(sql)
    while pos < n:
        m = _TOKEN.match(sql, pos)
        kind = m.lastgroup
        start, pos = m.start(), m.end()
        if kind in ("ws", "comment"):
            continue
        if kind == "close":
            depth -= 1
        yield kind, start, pos, depth
        if kind == "open":
            depth += 1


def first_word(sql):
    for kind, s, e, _ in _tokens(sql):
        return sql[s:e].upper() if kind == "word" else ""
    return ""


def _unquote(tok):
    if tok[:1] in ('"', "`"):
        return tok[1:-1]
    return tok


def split_insert(sql):
    """For `INSERT ... FORMAT <name> [data]` returns (head, fmt, fmt_end):
    head = the statement before FORMAT, fmt = format name, fmt_end = offset
    just after the format name. None for anything else (INSERT ... VALUES,
    INSERT ... SELECT, non-INSERT, or no FORMAT clause found)."""
    toks = _tokens(sql)
    for kind, s, e, _ in toks:
        if kind != "word" or sql[s:e].upper() != "INSERT":
            return None
        break
    else:
        return None
    for kind, s, e, depth in toks:
        if depth or kind != "word":
            continue
        w = sql[s:e].upper()
        if w in ("VALUES", "SELECT", "WITH"):
            return None
        if w == "FORMAT":
            for kind2, s2, e2, _ in toks:
                if kind2 in ("word", "qid"):
                    return sql[:s].rstrip(), _unquote(sql[s2:e2]), e2
                return None
            return None
    return None


def data_start(text, pos):
    """ClickHouse's rule for where inline INSERT data begins after the format
    name: skip spaces/tabs/form feeds, then at most one line break."""
    n = len(text)
    while pos < n and text[pos] in " \t\f":
        pos += 1
    if pos < n and text[pos] == "\r":
        pos += 1
    if pos < n and text[pos] == "\n":
        pos += 1
    return pos


def output_format(sql):
    """The format named by a top-level FORMAT clause of a query, or None."""
    found = None
    toks = _tokens(sql)
    for kind, s, e, depth in toks:
        if depth == 0 and kind == "word" and sql[s:e].upper() == "FORMAT":
            for kind2, s2, e2, _ in toks:
                if kind2 in ("word", "qid"):
                    found = _unquote(sql[s2:e2])
                break
    return found


# ------------------------------------------------------------ authentication
_AUTH_HELP = ("\n\nIf you have installed ClickHouse and forgot password you can reset it in the "
              "configuration file.\nThe password for default user is typically located at "
              "/etc/clickhouse-server/users.d/default-password.xml\nand deleting this file will "
              "reset the password.\nSee also /etc/clickhouse-server/users.xml on the server where "
              "ClickHouse is installed.\n\n")


def credentials(params, headers):
    """(user, password) as ClickHouse's HTTP handler reads them: the
    X-ClickHouse-User / X-ClickHouse-Key headers, else `Authorization: Basic`,
    else the `user` / `password` URL parameters; user `default` and an empty
    password when nothing is sent. Using two of these ways at once is an
    error (Code 516 in ClickHouse too)."""
    import base64
    ways = []
    if headers.get("X-ClickHouse-User") is not None or headers.get("X-ClickHouse-Key") is not None:
        ways.append((headers.get("X-ClickHouse-User") or "default", headers.get("X-ClickHouse-Key") or ""))
    auth = headers.get("Authorization") or ""
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise ChError(516, "AUTHENTICATION_FAILED", "Invalid Authorization header")
        ways.append((user or "default", password))
    if "user" in params or "password" in params:
        ways.append((params.get("user") or "default", params.get("password") or ""))
    if len(ways) > 1:
        raise ChError(516, "AUTHENTICATION_FAILED", "Invalid authentication: it is not allowed "
                      "to use several authentication methods simultaneously")
    return ways[0] if ways else ("default", "")


def check_auth(want_user, want_password, params, headers):
    """Raises ChError 516 AUTHENTICATION_FAILED, with ClickHouse's text,
    unless the request's credentials are `want_user` / `want_password`."""
    import hmac
    user, password = credentials(params, headers)
    if user == want_user and hmac.compare_digest(password.encode("utf-8"), want_password.encode("utf-8")):
        return
    raise ChError(516, "AUTHENTICATION_FAILED",
                  f"{user}: Authentication failed: password is incorrect, "
                  f"or there is no user with such name.{_AUTH_HELP}")
