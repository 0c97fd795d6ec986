"""Roles and accounts on the secured MLflow tracking server (README: Scaling out), made by its admin.

    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... MLFLOW_TRACKING_SERVER_CERT_PATH=ca.pem \\
      python deploy/accounts.py https://mlflow.internal:5000 --out credentials worker:sweep-bot viewer:alice release:bob

Each ROLE:NAME gives account NAME the role; a new account gets a random password, written only to
OUT/NAME.credentials (mode 600, MLflow's credentials-file format: copy it to ~/.mlflow/credentials on the machine
that uses the account). An existing account keeps its password and gains the role. Running it again changes
nothing that is already so. Nothing secret is printed.

The roles (MLflow 3.17's basic-auth app: a grant on "*" covers every experiment or registered model, those made
later too; the server's default_permission, NO_PERMISSIONS in deploy/mlflow-server.sh, applies to all else):
  worker   EDIT on experiments and registered models: runs sweeps, logs runs, registers versions. MLflow checks
           moving an alias with the same EDIT on the registered model: a worker can move `champion` too.
  viewer   READ on both: browses runs and the registry, loads models (caption, export).
  release  READ on experiments, MANAGE on registered models: moves and deletes aliases, manages who may use a
           model; trains nothing.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import warnings
from pathlib import Path

ROLES = {
    "worker": [("experiment", "EDIT"), ("registered_model", "EDIT")],
    "viewer": [("experiment", "READ"), ("registered_model", "READ")],
    "release": [("experiment", "READ"), ("registered_model", "MANAGE")],
}
WORKSPACE = "default"  # the one workspace of a server without --enable-workspaces
CREDENTIALS = """\
# MLflow account {name} (role {role}) on {uri}, made by deploy/accounts.py.
# Copy this file to ~/.mlflow/credentials on the machine that uses the account (chmod 600), or export the two
# values as MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.
[mlflow]
mlflow_tracking_username = {name}
mlflow_tracking_password = {password}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uri", help="the tracking server, e.g. https://mlflow.internal:5000")
    parser.add_argument("accounts", nargs="+", metavar="ROLE:NAME", help=f"ROLE is one of {', '.join(ROLES)}")
    parser.add_argument("--out", required=True, type=Path, help="folder for the new accounts' credentials files")
    args = parser.parse_args(argv)
    try:
        wanted = [_parse(item) for item in args.accounts]
        from blipexp import access  # one-line errors for an unreachable server, a wrong login, an untrusted certificate

        access.check_server(args.uri, "pass the tracking server's URI")
        with warnings.catch_warnings():  # importing MLflow's server modules warns about its own dependencies
            warnings.simplefilter("ignore")
            from mlflow.server.auth.client import AuthServiceClient

        client = AuthServiceClient(args.uri)
        for role, name in wanted:
            print(_ensure_account(client, args.uri, args.out, _ensure_role(client, role), role, name))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _parse(item: str) -> tuple[str, str]:
    role, _, name = item.partition(":")
    if role not in ROLES or not name:
        raise ValueError(f"{item!r} is not ROLE:NAME with ROLE one of {', '.join(ROLES)}")
    return role, name


def _ensure_role(client, role: str) -> int:
    """The id of role blipexp-ROLE, made with its grants if missing; a grant it lacks is added."""
    name = f"blipexp-{role}"
    found = next((r for r in client.list_roles(WORKSPACE) if r.name == name), None)
    if found is None:
        found = client.create_role(WORKSPACE, name, description=f"blipexp {role} (deploy/accounts.py)")
    held = {(p.resource_type, p.resource_pattern, p.permission) for p in client.list_role_permissions(found.id)}
    for resource_type, permission in ROLES[role]:
        if (resource_type, "*", permission) not in held:
            client.add_role_permission(found.id, resource_type, "*", permission)
    return found.id


def _ensure_account(client, uri: str, out: Path, role_id: int, role: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.get_user(name)
        made = None
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        made = _new_account(client, uri, out, role, name)
    if role_id not in {r.id for r in client.list_user_roles(name)}:
        client.assign_role(name, role_id)
    return f"{name}: role {role}; " + (f"new account, its credentials in {made}" if made else
                                        "existing account, password unchanged")


def _new_account(client, uri: str, out: Path, role: str, name: str) -> Path:
    """Write the credentials file first (mode 600, never over an existing one), then make the account: a failure
    leaves no account whose password nobody has."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.credentials"
    password = secrets.token_urlsafe(24)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ValueError(f"{path} exists but account {name!r} does not: move the file away, then run again") from None
    with os.fdopen(descriptor, "w") as file:
        file.write(CREDENTIALS.format(name=name, role=role, uri=uri, password=password))
    try:
        client.create_user(name, password)
    except BaseException:
        path.unlink()
        raise
    return path


if __name__ == "__main__":
    sys.exit(main())
