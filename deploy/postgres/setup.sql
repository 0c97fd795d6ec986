-- Accounts and databases of the secured scale-out stack (README: Scaling out). Run once as the superuser, with the
-- two passwords in the environment (never on a command line):
--   BLIPEXP_DB_WORKER_PASSWORD=... BLIPEXP_DB_MLFLOW_PASSWORD=... psql -U postgres -f setup.sql
-- (psql 15 or newer: \getenv). Clients then put the password in ~/.pgpass or $PGPASSFILE, not in a URL.
--   blip_worker  the sweep workers: owns the Optuna study database, nothing else
--   mlflow       the MLflow tracking server: owns the runs-and-registry and the accounts databases
\set ON_ERROR_STOP on
\getenv worker_password BLIPEXP_DB_WORKER_PASSWORD
\getenv mlflow_password BLIPEXP_DB_MLFLOW_PASSWORD
\if :{?worker_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'set BLIPEXP_DB_WORKER_PASSWORD in the environment'; END $$;
\endif
\if :{?mlflow_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'set BLIPEXP_DB_MLFLOW_PASSWORD in the environment'; END $$;
\endif
SET password_encryption = 'scram-sha-256';
CREATE ROLE blip_worker LOGIN PASSWORD :'worker_password';
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE optuna OWNER blip_worker;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
-- PUBLIC may connect to every new database by default: only the owners may
REVOKE ALL ON DATABASE optuna, mlflow, mlflow_auth FROM PUBLIC;
