"""Unit tests for chwire (no engine, no server needed):
    .venv/chfront/bin/python -m unittest discover -s scripts/chfront -p 'test_*.py'

The vectors were produced by the Rust crates the ClickHouse client uses:
`cityhash_rs::cityhash_102_128(input)` and `clickhouse::_priv::lz4_compress(input)`
(clickhouse 0.15.3, cityhash-rs 1.0.1), i.e. exactly what the client sends with
`decompress=1`.
"""

import gzip
import unittest
from urllib.parse import parse_qsl, urlsplit

import chwire
from chwire import ChError
from clickhouse_cityhash.cityhash import CityHash128


def _gen(n):
    return bytes(((i * 31 + n * 7) % 251) for i in range(n))


CITYHASH_102_128 = [
    (b'', 0x3df09dfc64c09a2b3cb540c392e51e29),
    (b'a', 0xd27139a1afe01ad0fd7e8ee2e4c86cf6),
    (b'abc', 0x900ff195577748fe13a9176355b20d7e),
    (_gen(1), 0x8be55b379cce0e4005ab4744478b1cba),
    (_gen(15), 0xac6e664817f8b8bae25658607de11a0f),
    (_gen(16), 0x19f2ab13d03b5eef7dc8642f1ac6698a),
    (_gen(17), 0x37f9d020dcb5b8d90416330cd93d2d2e),
    (_gen(31), 0x7bd334e6a734bca50724b318facb2ac4),
    (_gen(32), 0x2621152fbaabb685af7323a3d11278ab),
    (_gen(33), 0x4566b11aba5c751d03db31bb236d6080),
    (_gen(63), 0xa28c18b547a5b572299631d3764abdc0),
    (_gen(64), 0xed7ed872fd4e36c61e62cedb99b77692),
    (_gen(65), 0x9a5a69e6de67de089caff1fa939fa119),
    (_gen(127), 0x7621c9eb8dd1f230631417df70dc2ac4),
    (_gen(128), 0xca9f560873aed8507bbdfa596301a029),
    (_gen(129), 0x9ceb0b3322aacd8295e432a093066bc8),
    (_gen(200), 0xf4c1c42a82e06fbec484c7cbfe0956b1),
    (_gen(255), 0xa05c3d2a633d6bb47f021dfd13dd75f9),
    (_gen(256), 0x0d5228d0f3c6ecd0a5e34f353482cc7e),
    (_gen(1000), 0xe8117cee0a9fbf02e5eb9c6afc15a329),
    (_gen(4096), 0xcfe983b062748ceeb897fa8a402f343c),
    (_gen(70000), 0x46341e21a853438d43b31a29935cca57),
]
CRATE_LZ4_FRAMES = [
    (b'', "12b83a602bd7de6df44915041a40db2b820a0000000000000000"),
    (b'a', "f665de48a65f09e8a570e4973a38ee79820b000000010000001061"),
    (b'abc', "aae188d5ccfd2a4dc81e026dfd1d9ee5820d0000000300000030616263"),
    (_gen(15), "e68154d5d806d34bae6df502d8536d66821a0000000f000000f0006988a7c6e50928476685a4c3e20625"),
    (_gen(16), "c51c4e58aed968b3526faf1e4c345d9b821b00000010000000f001708faecdec102f4e6d8cabcae90d2c4b"),
    (_gen(17), "ce5344994b2ec510b3f209b711a04700821c00000011000000f0027796b5d4f31736557493b2d1f014335271"),
    (_gen(31), "3775c923774c32c21f40fbfcd2f09cd9822a0000001f000000f010d9f81c3b5a7998b7d6f51938577695b4d3f21635547392b1d0ef133251708f"),
    (_gen(32), "0b96e2324cd28b982df00248f084a44d822b00000020000000f011e004234261809fbedd01203f5e7d9cbbdaf91d3c5b7a99b8d7f61a39587796b5"),
    (_gen(33), "c34136c6f202cc09e7d6497f19026aeb822c00000021000000f012e70b2a496887a6c5e40827466584a3c2e10524436281a0bfde0221405f7e9dbcdb"),
    (_gen(63), "bd9685be3bddb7418c5a634da75d9535824a0000003f000000f030bedd01203f5e7d9cbbdaf91d3c5b7a99b8d7f61a39587796b5d4f31736557493b2d1f01433527190afceed11304f6e8daccbea0e2d4c6b8aa9c8e70b2a4968"),
    (_gen(64), "62430af523ea1250572a547beef0bb25824b00000040000000f031c5e40827466584a3c2e10524436281a0bfde0221405f7e9dbcdbfa1e3d5c7b9ab9d8f71b3a597897b6d5f41837567594b3d2f11534537291b0cfee1231506f8e"),
    (_gen(65), "30416b2172ae735f39e02445b51b8a30824c00000041000000f032cceb0f2e4d6c8baac9e80c2b4a6988a7c6e50928476685a4c3e20625446382a1c0df032241607f9ebddc001f3e5d7c9bbad9f81c3b5a7998b7d6f51938577695b4"),
    (_gen(127), "c994002d6f3182d054b88503bc2ab618828a0000007f000000f07088a7c6e50928476685a4c3e20625446382a1c0df032241607f9ebddc001f3e5d7c9bbad9f81c3b5a7998b7d6f51938577695b4d3f21635547392b1d0ef133251708faecdec102f4e6d8cabcae90d2c4b6a89a8c7e60a29486786a5c4e30726456483a2c1e004234261809fbedd01203f5e7d9cbbdaf91d3c5b7a99b8d7f61a"),
    (_gen(128), "5eaa7ab6891aac0a459dc1cb8242cb30828b00000080000000f0718faecdec102f4e6d8cabcae90d2c4b6a89a8c7e60a29486786a5c4e30726456483a2c1e004234261809fbedd01203f5e7d9cbbdaf91d3c5b7a99b8d7f61a39587796b5d4f31736557493b2d1f01433527190afceed11304f6e8daccbea0e2d4c6b8aa9c8e70b2a496887a6c5e40827466584a3c2e10524436281a0bfde022140"),
    (_gen(129), "df21ecb23a864f781591d1ec8dc1ca53828c00000081000000f07296b5d4f31736557493b2d1f01433527190afceed11304f6e8daccbea0e2d4c6b8aa9c8e70b2a496887a6c5e40827466584a3c2e10524436281a0bfde0221405f7e9dbcdbfa1e3d5c7b9ab9d8f71b3a597897b6d5f41837567594b3d2f11534537291b0cfee1231506f8eadcceb0f2e4d6c8baac9e80c2b4a6988a7c6e509284766"),
    (_gen(200), "914ba00df4c02042fcba2810b4b0861582d3000000c8000000f0b991b0cfee1231506f8eadcceb0f2e4d6c8baac9e80c2b4a6988a7c6e50928476685a4c3e20625446382a1c0df032241607f9ebddc001f3e5d7c9bbad9f81c3b5a7998b7d6f51938577695b4d3f21635547392b1d0ef133251708faecdec102f4e6d8cabcae90d2c4b6a89a8c7e60a29486786a5c4e30726456483a2c1e004234261809fbedd01203f5e7d9cbbdaf91d3c5b7a99b8d7f61a39587796b5d4f31736557493b2d1f01433527190afceed11304f6e8daccbea0e2d4c6b8aa9c8e70b2a496887a6c5e40827"),
    (_gen(255), "39e4d2e157d6b532bf3fd34476afdd0d820a010000ff000000f0f01c3b5a7998b7d6f51938577695b4d3f21635547392b1d0ef133251708faecdec102f4e6d8cabcae90d2c4b6a89a8c7e60a29486786a5c4e30726456483a2c1e004234261809fbedd01203f5e7d9cbbdaf91d3c5b7a99b8d7f61a39587796b5d4f31736557493b2d1f01433527190afceed11304f6e8daccbea0e2d4c6b8aa9c8e70b2a496887a6c5e40827466584a3c2e10524436281a0bfde0221405f7e9dbcdbfa1e3d5c7b9ab9d8f71b3a597897b6d5f41837567594b3d2f11534537291b0cfee1231506f8eadcceb0f2e4d6c8baac9e80c2b4a6988a7c6e50928476685a4c3e20625446382a1c0df032241607f9ebddc001f3e5d7c9bbad9f81c3b5a79"),
    (_gen(256), "144a7fce590c53891f7872fdb027187a820b01000000010000f0f1234261809fbedd01203f5e7d9cbbdaf91d3c5b7a99b8d7f61a39587796b5d4f31736557493b2d1f01433527190afceed11304f6e8daccbea0e2d4c6b8aa9c8e70b2a496887a6c5e40827466584a3c2e10524436281a0bfde0221405f7e9dbcdbfa1e3d5c7b9ab9d8f71b3a597897b6d5f41837567594b3d2f11534537291b0cfee1231506f8eadcceb0f2e4d6c8baac9e80c2b4a6988a7c6e50928476685a4c3e20625446382a1c0df032241607f9ebddc001f3e5d7c9bbad9f81c3b5a7998b7d6f51938577695b4d3f21635547392b1d0ef133251708faecdec102f4e6d8cabcae90d2c4b6a89a8c7e60a29486786a5c4e30726456483a2c1e004234261809f"),
]


class CityHashTest(unittest.TestCase):
    def test_matches_cityhash_rs(self):
        for data, want in CITYHASH_102_128:
            self.assertEqual(CityHash128(data), want, f"len {len(data)}")


class BlockFramingTest(unittest.TestCase):
    def test_decodes_what_the_crate_sends(self):
        for data, framed in CRATE_LZ4_FRAMES:
            self.assertEqual(chwire.decode_blocks(bytes.fromhex(framed)), data)

    def test_our_checksum_equals_the_crates(self):
        for data, framed in CRATE_LZ4_FRAMES:
            raw = bytes.fromhex(framed)
            self.assertEqual(chwire.block_checksum(raw[16:]), raw[:16])

    def test_concatenated_blocks_and_roundtrip(self):
        body = b"".join(bytes.fromhex(f) for _, f in CRATE_LZ4_FRAMES)
        self.assertEqual(chwire.decode_blocks(body), b"".join(d for d, _ in CRATE_LZ4_FRAMES))
        big = _gen(3_000_000)
        enc = chwire.encode_blocks(big, block_size=1 << 20)
        self.assertEqual(chwire.decode_blocks(enc), big)
        self.assertEqual(chwire.encode_blocks(b""), b"")

    def test_uncompressed_method(self):
        payload = b"hello"
        block = bytes([0x02]) + (9 + 5).to_bytes(4, "little") + (5).to_bytes(4, "little") + payload
        self.assertEqual(chwire.decode_blocks(chwire.block_checksum(block) + block), payload)

    def test_corruption_detected(self):
        raw = bytearray(bytes.fromhex(CRATE_LZ4_FRAMES[2][1]))
        raw[-1] ^= 0xFF
        with self.assertRaises(ChError) as cm:
            chwire.decode_blocks(bytes(raw))
        self.assertEqual(cm.exception.code, 40)
        self.assertEqual(chwire.decode_blocks(bytes(raw), verify=False)[:-1], b"ab")
        with self.assertRaises(ChError):
            chwire.decode_blocks(bytes(raw[:-3]))


class HttpEncodingTest(unittest.TestCase):
    def test_choose(self):
        self.assertEqual(chwire.choose_encoding("lz4"), "lz4")
        self.assertEqual(chwire.choose_encoding("deflate, gzip, br, zstd"), "deflate")
        self.assertEqual(chwire.choose_encoding("br;q=1, gzip;q=0.5"), "gzip")
        self.assertIsNone(chwire.choose_encoding("br"))
        self.assertIsNone(chwire.choose_encoding(None))

    def test_roundtrip(self):
        data = _gen(100_000)
        for enc in chwire.HTTP_ENCODINGS:
            self.assertEqual(chwire.http_decode(chwire.http_encode(data, enc), enc), data, enc)
        self.assertEqual(gzip.decompress(chwire.http_encode(data, "gzip")), data)


class SqlTest(unittest.TestCase):
    def test_split_insert(self):
        q = "INSERT INTO `t`(`a`,`b`) FORMAT RowBinaryWithNamesAndTypes"
        self.assertEqual(chwire.split_insert(q),
                         ("INSERT INTO `t`(`a`,`b`)", "RowBinaryWithNamesAndTypes", len(q)))
        q = "insert into db.t settings async_insert=0 format JSONEachRow {\"a\":1}"
        head, fmt, end = chwire.split_insert(q)
        self.assertEqual((head, fmt), ("insert into db.t settings async_insert=0", "JSONEachRow"))
        self.assertEqual(q[chwire.data_start(q, end):], "{\"a\":1}")
        q = "INSERT INTO t (x) -- FORMAT CSV\n /* FORMAT TSV */ FORMAT CSV\n1\n2\n"
        head, fmt, end = chwire.split_insert(q)
        self.assertEqual(fmt, "CSV")
        self.assertEqual(q[chwire.data_start(q, end):], "1\n2\n")
        self.assertIsNone(chwire.split_insert("INSERT INTO t VALUES ('FORMAT CSV')"))
        self.assertIsNone(chwire.split_insert("INSERT INTO t SELECT 1 FORMAT CSV"))
        self.assertIsNone(chwire.split_insert("SELECT 1 FORMAT CSV"))
        self.assertIsNone(chwire.split_insert("INSERT INTO t FORMAT"))
        q = "INSERT INTO FUNCTION file('x.csv', 'CSV', 'a String') FORMAT \"CSV\"\t \n\tx"
        head, fmt, end = chwire.split_insert(q)
        self.assertEqual(fmt, "CSV")
        self.assertEqual(q[chwire.data_start(q, end):], "\tx")

    def test_output_format(self):
        self.assertEqual(chwire.output_format("SELECT 1 FORMAT JSON"), "JSON")
        self.assertEqual(chwire.output_format("SELECT 'FORMAT CSV', (SELECT 1 FORMAT TSV)"), None)
        self.assertIsNone(chwire.output_format("SELECT formatDateTime(now(), '%F')"))

    def test_multipart(self):
        body = (b"--b1\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n"
                b"SELECT {x:String}\r\n--b1\r\nContent-Disposition: form-data; "
                b"name=\"param_x\"\r\n\r\nit\\'s\r\n--b1--\r\n")
        self.assertEqual(chwire.parse_multipart(body, "multipart/form-data; boundary=b1"),
                         {"query": b"SELECT {x:String}", "param_x": b"it\\'s"})


# What clickhouse-connect 1.12.0 (Superset's driver) put in the URL of a
# query and of its connect check, recorded between it and chfront.
CLICKHOUSE_CONNECT_QUERY_URL = (
    "/?date_time_input_format=best_effort&cast_string_to_dynamic_use_inference=1"
    "&session_id=a4cd78ee-07fe-4f6a-abaf-b9bc49626d96&cancel_http_readonly_queries_on_client_close=1"
    "&wait_end_of_query=1&send_progress_in_http_headers=1&http_headers_progress_interval_ms=120000"
    "&database=adtech&query_id=decad42c-9791-4ce2-b2a5-1e7937d5e405")
CLICKHOUSE_CONNECT_CHECK_URL = (
    "/?wait_end_of_query=1&client_protocol_version=54405&database=adtech"
    "&query_id=e2194308-cc37-49f0-ba77-2192704af07c")
# Some of the engine's setting names (chfront reads all of them from
# system.settings at startup).
SETTING_NAMES = {"date_time_input_format", "cast_string_to_dynamic_use_inference",
                 "cancel_http_readonly_queries_on_client_close", "send_progress_in_http_headers",
                 "http_headers_progress_interval_ms", "readonly", "max_result_rows"}


def _url_params(url):
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


class ParamsTest(unittest.TestCase):
    def test_clickhouse_connect_query(self):
        qparams, settings, ignored = chwire.classify_params(_url_params(CLICKHOUSE_CONNECT_QUERY_URL), SETTING_NAMES)
        self.assertEqual(qparams, {})
        self.assertEqual(ignored, [], "every parameter clickhouse-connect sends is understood")
        self.assertEqual(settings, {
            "date_time_input_format": "best_effort",
            "cast_string_to_dynamic_use_inference": "1",
            "cancel_http_readonly_queries_on_client_close": "1",
            "send_progress_in_http_headers": "1",
            "http_headers_progress_interval_ms": "120000",
        })

    def test_clickhouse_connect_check(self):
        self.assertEqual(chwire.classify_params(_url_params(CLICKHOUSE_CONNECT_CHECK_URL), SETTING_NAMES),
                         ({}, {}, []))

    def test_query_params_settings_and_unknown_names(self):
        qparams, settings, ignored = chwire.classify_params(
            {"param_x": "1", "param_param_y": "2", "max_result_rows": "5", "no_such_setting": "1",
             "session_id": "s", "user": "u", "password": "p"}, SETTING_NAMES)
        self.assertEqual(qparams, {"x": "1", "param_y": "2"})
        self.assertEqual(settings, {"max_result_rows": "5"})
        self.assertEqual(ignored, ["no_such_setting"])


if __name__ == "__main__":
    unittest.main()
