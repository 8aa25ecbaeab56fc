"""Superset configuration for adstream's dashboard, used by scripts/superset.sh
(native, metadata in SQLite under .run/superset) and by docker-compose.yml
(the apache/superset image, same file mounted). Loaded by Superset through
SUPERSET_CONFIG_PATH; everything that differs between the two comes from the
environment.

  SUPERSET_SECRET_KEY   required: signs sessions and encrypts the stored
                        database password. scripts/superset.sh generates one
                        per install (.run/superset/secret_key).
  SUPERSET_HOME         where the SQLite metadata database lives.
  SUPERSET_METADATA_URI optional: another metadata database (SQLAlchemy URI).
"""

import os

SECRET_KEY = os.environ.get("SUPERSET_SECRET_KEY", "")
if len(SECRET_KEY) < 32:
    # Superset would otherwise start with its public default key.
    raise RuntimeError("SUPERSET_SECRET_KEY must be set (32+ characters); scripts/superset.sh generates one")

_home = os.environ.get("SUPERSET_HOME") or os.path.expanduser("~/.superset")
SQLALCHEMY_DATABASE_URI = os.environ.get("SUPERSET_METADATA_URI") or (
    "sqlite:///" + os.path.join(_home, "superset.db") + "?check_same_thread=false"
)

# A single-user local tool: no examples, no CDN, no telemetry.
SQLALCHEMY_EXAMPLES_URI = SQLALCHEMY_DATABASE_URI
# Talisman's default CSP is fine for the UI but logs a warning per start when
# left implicit; keep it on, explicitly.
TALISMAN_ENABLED = True
CONTENT_SECURITY_POLICY_WARNING = False
# Charts of a live stream: don't cache query results (the dashboard refreshes
# itself every 30 s).
CACHE_DEFAULT_TIMEOUT = 0
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
# Dashboards are rendered by the browser (the headless browser test included);
# no server-side screenshots or reports.
FEATURE_FLAGS = {"ALERT_REPORTS": False, "THUMBNAILS": False}
