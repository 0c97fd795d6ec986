"""An MLflow tracking server's door: does it answer, over a certificate this machine trusts, does it take this
process's login, and may the account do what a command is about to do. Every "no" is one line naming the cause
and the fix (tracking.configure and the commands raise it as a ValueError), found before any work starts.

MLflow's basic-auth app (`mlflow server --app-name basic-auth`, README: Scaling out) answers a missing or wrong
login with 401 and a missing permission with 403; MLflow's client raises either as an MlflowException with the
server's response in it, and retries a server that does not answer for minutes. A server without the app has no
accounts: every check passes there. Passwords are never part of a message: a URI is shown through secrecy.masked.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..runtime import secrecy

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
CERT_ENV = "MLFLOW_TRACKING_SERVER_CERT_PATH"
PROBE_TIMEOUT_S = 5
CURRENT_USER = "/api/2.0/mlflow/users/current"  # served by the basic-auth app only
USER_PERMISSION = "/api/3.0/mlflow/users/permissions/get"  # an account's effective permission on one resource
# MLflow's permission levels, weakest first; DENY (an explicit veto) is below them all
LEVELS = ("DENY", "NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
LOGIN_FIX = f"set {USERNAME_ENV} and {PASSWORD_ENV} to your account's (or write them to ~/.mlflow/credentials)"
ROLES_FIX = "README: Scaling out, roles"
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # a request there, or to a server bound there, never leaves the machine


@dataclass(frozen=True)
class Account:
    """Who this process is on a server with the basic-auth app."""

    username: str
    is_admin: bool


def check_server(uri: str, fix: str) -> Account | None:
    """The account this process is logged in as at tracking server `uri`, or None for a server without accounts.

    ValueError when the server cannot be reached (`fix`: how to name another one), its certificate is not trusted,
    or it refuses the login."""
    response = _get(uri, CURRENT_USER, fix)
    if response.status_code == 401:
        raise ValueError(_login_refused(uri))
    if response.status_code != 200:  # no basic-auth app (404): an open server
        return None
    user = response.json().get("user") or {}
    return Account(user.get("username", ""), bool(user.get("is_admin")))


def _get(uri: str, path: str, fix: str, params: dict | None = None):
    """GET with the login, client certificate and CA that MLflow's client uses for `uri`: one attempt, seconds."""
    import requests
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)
    headers = {"Authorization": f"Bearer {creds.token}"} if creds.token and not creds.username else {}
    try:
        return requests.get(uri.rstrip("/") + path, params=params, headers=headers, verify=creds.verify,
                            auth=(creds.username, creds.password) if creds.username and creds.password else None,
                            cert=creds.client_cert_path, timeout=PROBE_TIMEOUT_S)
    except requests.exceptions.SSLError as exc:
        raise ValueError(_tls_refused(uri, exc)) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        reason, fix = _reason(exc, uri), f"start it, or {fix}"
        if uri.startswith("http://") and "closed" in reason:  # what a server speaking TLS does to plain HTTP
            fix = f"if it serves HTTPS, reach it with https://; else {fix}"
        raise ValueError(f"MLflow tracking server {secrecy.masked(uri)} cannot be reached ({reason}): {fix}") from exc
    except OSError as exc:  # requests' own check of the CA path
        raise ValueError(f"${CERT_ENV} names {creds.server_cert_path}, which is not a readable file: set it to the "
                         "CA certificate that signed the server's certificate (ca.pem)") from exc


def _login_refused(uri: str) -> str:
    from mlflow.utils.credentials import read_mlflow_creds

    creds, shown = read_mlflow_creds(), secrecy.masked(uri)
    if not (creds.username and creds.password):
        return f"MLflow tracking server {shown} requires a login: {LOGIN_FIX}"
    return (f"MLflow tracking server {shown} refused the login of account {creds.username!r} (wrong user name or "
            f"password): check ${USERNAME_ENV} and ${PASSWORD_ENV} (or ~/.mlflow/credentials)")


def _tls_refused(uri: str, exc: Exception) -> str:
    reason, cert, shown = _reason(exc, uri), os.environ.get(CERT_ENV), secrecy.masked(uri)
    if "certificate verify failed" not in str(exc):
        return (f"TLS with MLflow tracking server {shown} failed ({reason}): check that the server serves HTTPS on "
                "that port (a server without TLS is reached with http://)")
    if "mismatch" in reason:
        return (f"MLflow tracking server {shown} presents a certificate for another name ({reason}): reach it by a "
                "name its certificate holds, or give it a certificate for this one (deploy/make-certs.sh)")
    if cert:
        return (f"MLflow tracking server {shown} presents a certificate that the CA in ${CERT_ENV} ({cert}) did not "
                f"sign ({reason}): set ${CERT_ENV} to the CA certificate that signed the server's")
    return (f"MLflow tracking server {shown} presents a certificate this machine does not trust ({reason}): set "
            f"${CERT_ENV} to the CA certificate that signed it (the ca.pem of README: Scaling out)")


def _reason(exc: Exception, uri: str) -> str:
    """The cause inside requests' nested exception text, e.g. 'Connection refused' (`uri`'s secrets masked)."""
    text = secrecy.scrubbed(str(exc), uri)
    for pattern in (r"certificate verify failed: ([^(')\"]+)", r"\[SSL: \w+\] ([^(')\"]+)",
                    r"\[Errno -?\d+\] ([^(')\"]+)", r"Disconnected\('([^']+)'", r"(timed out)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1).strip()
    return type(exc).__name__


def warn_if_clear_text(uri: str) -> str | None:
    """A warning when a password would travel unencrypted to another machine (http:// to a non-loopback host)."""
    from mlflow.utils.credentials import read_mlflow_creds

    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.hostname in LOOPBACK or not read_mlflow_creds().password:
        return None
    return (f"warning: the password of the MLflow account goes to {secrecy.masked(uri)} unencrypted (http://): "
            "serve the tracking server over HTTPS (README: Scaling out)")


# --- permissions, checked before the work that needs them


def require_run(uri: str, experiment: str, registered_model: str) -> None:
    """Before training: ValueError unless this account may log runs to `experiment` and register versions of
    `registered_model`, naming each permission it lacks.

    Only what exists is checked: MLflow lets any account create a new experiment or registered model (on a server
    without workspaces) and gives its creator MANAGE on it."""
    account = _account(uri)
    if account is None or account.is_admin:
        return
    import mlflow

    lacking = []
    try:
        found = mlflow.MlflowClient(uri).get_experiment_by_name(experiment)
        if found is not None:
            lacking += _lacks(uri, account, "experiment", found.experiment_id, experiment, "EDIT", "to log runs")
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "PERMISSION_DENIED":
            raise
        lacking.append(f"no permission on experiment {experiment!r} (needs EDIT to log runs)")
    if _model_exists(uri, registered_model):
        lacking += _lacks(uri, account, "registered_model", registered_model, registered_model, "EDIT",
                          "to register versions")
    if lacking:
        raise ValueError(f"account {account.username!r} may not run this on {secrecy.masked(uri)}: it has "
                         f"{' and '.join(lacking)}; nothing was trained. Run it with a worker account ({USERNAME_ENV}, "
                         f"{PASSWORD_ENV}), or ask the server's admin for the worker role ({ROLES_FIX})")


def require_alias(uri: str, registered_model: str, alias: str) -> None:
    """Before promoting: ValueError unless this account may move `alias` of `registered_model` (MLflow checks
    EDIT on the registered model). A model that does not exist is left to promote's own error."""
    account = _account(uri)
    if account is None or account.is_admin or not _model_exists(uri, registered_model):
        return
    lacking = _lacks(uri, account, "registered_model", registered_model, registered_model, "EDIT",
                     f"to move its alias {alias!r}")
    if lacking:
        raise ValueError(f"account {account.username!r} may not promote on {secrecy.masked(uri)}: it has "
                         f"{lacking[0]}; nothing was changed. Promote with an account of the release role, or ask the "
                         f"server's admin for it ({ROLES_FIX})")


def _account(uri: str) -> Account | None:
    """The account at a tracking server, None for a local store or a server without accounts."""
    return check_server(uri, "check the tracking URI") if uri.startswith(("http://", "https://")) else None


def _lacks(uri: str, account: Account, kind: str, resource_id: str, name: str, needed: str, why: str) -> list[str]:
    """[] when the account holds `needed` or more on the resource (or the server cannot say: its 403 will),
    else one phrase naming what it holds and what is needed."""
    response = _get(uri, USER_PERMISSION, "check the tracking URI",
                    {"username": account.username, "resource_type": kind, "resource_id": resource_id})
    if response.status_code != 200:
        return []
    held = response.json().get("permission", "NO_PERMISSIONS")
    if held in LEVELS and LEVELS.index(held) >= LEVELS.index(needed):
        return []
    label = kind.replace("_", " ")
    return [f"{held} on {label} {name!r} (needs {needed} {why})"]


def _model_exists(uri: str, name: str) -> bool:
    """Whether registered model `name` exists; one this account may not read counts as existing (its write would
    be refused too)."""
    import mlflow

    try:
        mlflow.MlflowClient(uri, registry_uri=uri).get_registered_model(name)
        return True
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        if exc.error_code == "PERMISSION_DENIED":
            return True
        raise


# --- MLflow's own refusals, met after the checks (e.g. a permission revoked meanwhile), as one line


def refusal(exc: BaseException) -> str | None:
    """One line for an exception carrying a tracking server's 401 or 403, else None."""
    status = _status(exc)
    if status is None:
        return None
    import mlflow

    uri = mlflow.get_tracking_uri()
    if status == 401:
        return _login_refused(uri)
    from mlflow.utils.credentials import read_mlflow_creds

    where = re.search(r"endpoint (\S+)|for url: (\S+)", secrecy.scrubbed(str(exc), uri))
    what = f" for {where.group(1) or where.group(2)}" if where else ""
    return (f"MLflow tracking server {secrecy.masked(uri)} refused account {read_mlflow_creds().username!r}: "
            f"permission denied{what}. Use an account whose role allows this ({USERNAME_ENV}), or ask the server's "
            f"admin ({ROLES_FIX})")


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "error_code", None)  # an MlflowException
    if code in ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"):
        return 401
    if code == "PERMISSION_DENIED":
        return 403
    response = getattr(exc, "response", None)  # a requests.HTTPError, e.g. from an artifact download
    status = getattr(response, "status_code", None)
    return status if status in (401, 403) else None
