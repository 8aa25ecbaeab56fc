"""Provisions a Superset installation with adstream's dashboard: the admin user,
the ClickHouse database, its datasets, the charts and the dashboard, all from
the export in superset/dashboard/ (Superset's own import format).

Run with Superset's Python after `superset db upgrade` and `superset init`
(scripts/superset.sh natively, superset/docker-init.sh in docker compose):

    python superset/provision.py

Idempotent: every run imports the whole export with overwrite (Superset's
assets import, the command behind POST /api/v1/assets/import/), so the
database URI, datasets, charts and dashboard always equal the files in the
repo, and the admin password equals the configured one.

Env:
  SUPERSET_ADMIN_USER / SUPERSET_ADMIN_PASSWORD   admin / admin
  ADSTREAM_CLICKHOUSE_URL   http://127.0.0.1:8123 (the ClickHouse HTTP interface)
  ADSTREAM_CLICKHOUSE_USER / ADSTREAM_CLICKHOUSE_PASSWORD   default / none
  ADSTREAM_DATABASE         adtech (the database adstream writes)
"""

import os
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import yaml

EXPORT = Path(__file__).resolve().parent / "dashboard"


def clickhouse_uri():
    """The SQLAlchemy URI (clickhouse-connect's `clickhousedb` dialect) for the
    ClickHouse adstream writes to, from the same variables adstream reads."""
    url = urlsplit(os.environ.get("ADSTREAM_CLICKHOUSE_URL") or "http://127.0.0.1:8123")
    if url.scheme not in ("http", "https") or not url.hostname:
        sys.exit(f"provision: ADSTREAM_CLICKHOUSE_URL must be http(s)://host[:port], got {url.geturl()!r}")
    user = url.username or os.environ.get("ADSTREAM_CLICKHOUSE_USER") or "default"
    password = url.password or os.environ.get("ADSTREAM_CLICKHOUSE_PASSWORD") or ""
    if not password and os.environ.get("ADSTREAM_CLICKHOUSE_PASSWORD_FILE"):
        password = Path(os.environ["ADSTREAM_CLICKHOUSE_PASSWORD_FILE"]).read_text().removesuffix("\n")
    database = database_name()
    port = url.port or (443 if url.scheme == "https" else 8123)
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    query = "?secure=true" if url.scheme == "https" else ""
    return f"clickhousedb://{auth}@{url.hostname}:{port}/{database}{query}"


def database_name():
    name = os.environ.get("ADSTREAM_DATABASE") or "adtech"
    if not name.replace("_", "a").isalnum() or name[0].isdigit():
        sys.exit(f"provision: ADSTREAM_DATABASE {name!r} is not a plain identifier")
    return name


def bundle(uri, database):
    """The export as an assets bundle ({path: YAML text}) with the database URI
    and the datasets' schema set for this installation."""
    contents = {}
    for path in sorted(EXPORT.rglob("*.yaml")):
        rel = path.relative_to(EXPORT).as_posix()
        config = yaml.safe_load(path.read_text())
        if rel == "metadata.yaml":
            config["type"] = "assets"
        elif rel.startswith("databases/"):
            config["sqlalchemy_uri"] = uri
        elif rel.startswith("datasets/"):
            config["schema"] = database
        contents[rel] = yaml.safe_dump(config, sort_keys=False)
    return contents


def main():
    uri = clickhouse_uri()
    contents = bundle(uri, database_name())

    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from superset import security_manager
        from superset.commands.importers.v1.assets import ImportAssetsCommand
        from superset.extensions import db
        from superset.utils.core import override_user

        name = os.environ.get("SUPERSET_ADMIN_USER") or "admin"
        password = os.environ.get("SUPERSET_ADMIN_PASSWORD") or "admin"
        admin = security_manager.find_user(username=name)
        if admin is None:
            role = security_manager.find_role("Admin")
            if role is None:
                sys.exit("provision: no Admin role; run `superset init` first")
            admin = security_manager.add_user(name, "Superset", "Admin", f"{name}@localhost", role, password=password)
            if not admin:
                sys.exit(f"provision: could not create user {name}")
            print(f"provision: created admin user {name}")
        else:
            security_manager.reset_password(admin.id, password)
        with override_user(admin):
            ImportAssetsCommand(contents).run()
        db.session.commit()
        safe = uri.split("@", 1)[1]
        charts = sum(1 for k in contents if k.startswith("charts/"))
        print(f"provision: imported {charts} charts and the dashboard; ClickHouse at {safe}")


if __name__ == "__main__":
    main()
