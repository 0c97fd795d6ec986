#!/usr/bin/env bash
# The MLflow tracking server of the secured scale-out stack (README: Scaling out): MLflow's basic-auth app (accounts
# and permissions in their own PostgreSQL database), HTTPS, runs and registry in PostgreSQL over TLS, models stored
# and served by the server. tests/test_access.py starts it exactly so.
#
#   deploy/mlflow-server.sh --host 0.0.0.0 --port 5000 --workers 4 --allowed-hosts mlflow.internal:5000
#
# Any option is passed on to `mlflow server`. Set in the environment (nothing secret goes on a command line or
# into the configuration file this script writes):
#   MLFLOW_BACKEND_STORE_URI      runs and registry, e.g.
#                                 postgresql://mlflow@db.internal/mlflow?sslmode=verify-full&sslrootcert=/etc/blipexp/ca.pem
#   BLIPEXP_AUTH_DATABASE_URI     accounts and permissions, e.g. the same URL with database mlflow_auth
#   MLFLOW_ARTIFACTS_DESTINATION  where models are kept: a folder on this machine or s3://bucket/path
#   BLIPEXP_TLS_CERT, BLIPEXP_TLS_KEY   the server's certificate and key (deploy/make-certs.sh, or your CA's)
#   PGPASSFILE (or ~/.pgpass)     the database password of user mlflow, read by the PostgreSQL driver
#   MLFLOW_FLASK_SERVER_SECRET_KEY  a long random string, the same for every server process of this deployment
#   MLFLOW_AUTH_ADMIN_USERNAME    the admin account; at the first start also MLFLOW_AUTH_ADMIN_PASSWORD (12 or more
#                                 characters): MLflow creates the admin with it, and refuses to start without one.
#                                 Unset the password afterwards: it is only read while the admin does not exist.
set -euo pipefail
for name in MLFLOW_BACKEND_STORE_URI BLIPEXP_AUTH_DATABASE_URI MLFLOW_ARTIFACTS_DESTINATION BLIPEXP_TLS_CERT \
            BLIPEXP_TLS_KEY MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_AUTH_ADMIN_USERNAME; do
  if [ -z "${!name:-}" ]; then
    echo "error: set $name (see the top of $0, or README: Scaling out)" >&2
    exit 2
  fi
done
for file in "$BLIPEXP_TLS_CERT" "$BLIPEXP_TLS_KEY"; do
  [ -r "$file" ] || { echo "error: $file is not a readable file (BLIPEXP_TLS_CERT / BLIPEXP_TLS_KEY)" >&2; exit 2; }
done

# MLflow reads the auth app's settings from this file. Everyone without a grant gets no permission at all: what a
# worker, viewer or release account may do comes from its role (deploy/accounts.py).
# Checking a password against its stored hash costs a server process about 0.2 s of CPU by design, and every request
# carries the password: the auth cache skips the check for a login that passed within the last
# BLIPEXP_AUTH_CACHE_SECONDS (60 by default). The price: a password changed or an account deleted is still accepted
# by the other server processes for up to that long. 0 turns the cache off.
config_dir=$(mktemp -d -t blipexp-mlflow-auth.XXXXXX)
cat > "$config_dir/basic_auth.ini" <<END
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = $BLIPEXP_AUTH_DATABASE_URI
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${BLIPEXP_AUTH_CACHE_SECONDS:-60}
END
export MLFLOW_AUTH_CONFIG_PATH=$config_dir/basic_auth.ini
# no background job runner (GenAI judges): blipexp does not use it, and it would start more processes
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
exec mlflow server --app-name basic-auth --serve-artifacts \
  --uvicorn-opts "--ssl-certfile $(printf %q "$BLIPEXP_TLS_CERT") --ssl-keyfile $(printf %q "$BLIPEXP_TLS_KEY")" "$@"
