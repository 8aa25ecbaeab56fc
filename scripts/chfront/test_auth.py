"""Unit tests for chfront's optional authentication (chwire.credentials /
check_auth; no engine, no server needed):
    .venv/chfront/bin/python -m unittest discover -s scripts/chfront -p 'test_*.py'

The expected text is ClickHouse's own for a wrong password (Code 516, the
help paragraph it appends, then the error name), as quoted from a 23.3
server in DarkWanderer/ClickHouse.Client#365.
"""

import base64
import unittest

import chwire
from chwire import ChError

WANT = ("ingest", "s3cret")


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class AuthTest(unittest.TestCase):
    def refused(self, params, headers):
        with self.assertRaises(ChError) as cm:
            chwire.check_auth(*WANT, params, headers)
        return cm.exception

    def test_each_way_of_sending_the_right_credentials_is_accepted(self):
        for params, headers in [
            ({}, {"X-ClickHouse-User": "ingest", "X-ClickHouse-Key": "s3cret"}),  # the Rust crate
            ({}, basic("ingest", "s3cret")),  # clickhouse-connect, curl -u
            ({"user": "ingest", "password": "s3cret"}, {}),  # URL parameters
        ]:
            chwire.check_auth(*WANT, params, headers)  # no exception

    def test_wrong_or_missing_credentials_fail_like_clickhouse(self):
        for params, headers in [
            ({}, {"X-ClickHouse-User": "ingest", "X-ClickHouse-Key": "wrong"}),
            ({}, {"X-ClickHouse-User": "other", "X-ClickHouse-Key": "s3cret"}),
            ({}, basic("ingest", "")),
            ({"user": "ingest"}, {}),
            ({}, {}),
        ]:
            e = self.refused(params, headers)
            self.assertEqual((e.code, e.name), (516, "AUTHENTICATION_FAILED"))
            text = str(e)
            self.assertTrue(text.startswith("Code: 516. DB::Exception: "), text)
            self.assertIn(": Authentication failed: password is incorrect, or there is no user "
                          "with such name.\n\nIf you have installed ClickHouse", text)
            self.assertTrue(text.endswith("installed.\n\n. (AUTHENTICATION_FAILED)"), text)
        # The user named is the one that was sent (`default` when none was).
        self.assertIn("DB::Exception: default: Authentication failed", str(self.refused({}, {})))

    def test_two_ways_at_once_are_refused(self):
        e = self.refused({"user": "ingest", "password": "s3cret"},
                         {"X-ClickHouse-User": "ingest", "X-ClickHouse-Key": "s3cret"})
        self.assertEqual(e.code, 516)
        self.assertIn("several authentication methods", str(e))

    def test_default_user_with_empty_password(self):
        chwire.check_auth("default", "", {}, {})
        self.assertEqual(chwire.credentials({}, {}), ("default", ""))


if __name__ == "__main__":
    unittest.main()
