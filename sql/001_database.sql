-- adstream schema. `{database}` is replaced by the validated --database name.
-- Every statement is idempotent: `adstream migrate` (and `adstream run` at
-- start) applies all files in order, every time.
CREATE DATABASE IF NOT EXISTS {database};
