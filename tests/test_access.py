"""The secured scale-out stack of README "Scaling out", built from the repository's deploy/ files exactly as the
README builds it: a private CA (deploy/make-certs.sh), PostgreSQL taking only TLS connections with SCRAM passwords
(deploy/postgres/), the MLflow server with the basic-auth app over HTTPS (deploy/mlflow-server.sh), roles and
accounts (deploy/accounts.py); then blipexp's checks in front of it (blipexp/access.py): what a worker, a viewer
and a release account may do, one line for every refused login, certificate or permission, and no secret written
anywhere. One stack serves the whole module.

PostgreSQL and openssl must be installed (Debian: apt-get install postgresql openssl; .ci/run does it): without
them these tests skip, and fail under CI=true.
"""
from __future__ import annotations

import base64
import configparser
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import certifi
import mlflow
import pytest
import requests
from conftest import REPO, require_tool
from processes import child_env, free_port, kill_group
from test_scaleout import (
    SWEEP_EXPERIMENTS,
    WORKER,
    as_postgres_user,
    check_shared_sweep,
    kill_one_mid_trial,
    load_study,
    postgres_bin,
)

from blipexp import cli, registry
from blipexp.tracking import access

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]

DEPLOY = REPO / "deploy"
TIMEOUT = 300
LOGIN_VARIABLES = (access.USERNAME_ENV, access.PASSWORD_ENV, access.CERT_ENV)


@dataclass
class Database:
    port: int
    ca: Path
    passwords: dict[str, str]  # by PostgreSQL role: postgres (the superuser), blip_worker, mlflow
    folder: Path

    def url(self, database: str, user: str, password: bool = False) -> str:
        secret = f":{self.passwords[user]}" if password else ""
        return (f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{database}"
                f"?sslmode=verify-full&sslrootcert={self.ca}")

    def pgpass(self, user: str, path: Path) -> Path:
        """A libpq password file for `user` (how the README has clients keep the password out of URLs)."""
        path.write_text(f"127.0.0.1:{self.port}:*:{user}:{self.passwords[user]}\n")
        path.chmod(0o600)
        return path

    def dump(self, database: str) -> str:
        """Everything in `database`, as SQL (pg_dump as the superuser, over TLS)."""
        done = subprocess.run([postgres_bin("pg_dump"), self.url(database, "postgres")], capture_output=True, text=True,
                              env={**os.environ, "PGPASSWORD": self.passwords["postgres"]}, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout


@dataclass
class Server:
    uri: str
    artifacts: Path
    ca: Path
    admin: tuple[str, str]
    env: dict[str, str]  # how deploy/mlflow-server.sh was started (for starting it again)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    require_tool("openssl", "install openssl (Debian: apt-get install openssl)")
    folder = tmp_path_factory.mktemp("certs")
    done = subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), str(folder), "127.0.0.1", "localhost"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def database(certs):
    """PostgreSQL configured by deploy/postgres/ (pg_hba.conf, secure.conf, setup.sql) on a throwaway cluster."""
    folder = Path(tempfile.mkdtemp(prefix="blipexp-pg-tls-"))  # not under pytest's tmp: `nobody` must reach it
    data, port = folder / "data", free_port()
    passwords = {role: secrets.token_urlsafe(18) for role in ("postgres", "blip_worker", "mlflow")}
    (folder / "pwfile").write_text(passwords["postgres"])
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
        shutil.chown(folder / "pwfile", "nobody")
    _postgres_step(folder, [postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--pwfile",
                            str(folder / "pwfile"), "--auth=scram-sha-256", "--no-locale", "-E", "UTF8"])
    shutil.copy(DEPLOY / "postgres" / "pg_hba.conf", data / "pg_hba.conf")
    for name in ("server.pem", "server.key"):
        shutil.copy(certs / name, data / name)
        (data / name).chmod(0o600)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"\ninclude '{DEPLOY / 'postgres' / 'secure.conf'}'\n")
    if os.geteuid() == 0:
        for name in ("pg_hba.conf", "server.pem", "server.key", "postgresql.conf"):
            shutil.chown(data / name, "nobody")
    db = Database(port, certs / "ca.pem", passwords, folder)
    try:
        _postgres_step(folder, [postgres_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60",
                                "start", "-o", f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off "
                                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"])
        done = subprocess.run([postgres_bin("psql"), db.url("postgres", "postgres"), "-f",
                               str(DEPLOY / "postgres" / "setup.sql")],
                              env={**os.environ, "PGPASSWORD": passwords["postgres"],
                                   "BLIPEXP_DB_WORKER_PASSWORD": passwords["blip_worker"],
                                   "BLIPEXP_DB_MLFLOW_PASSWORD": passwords["mlflow"]},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        yield db
    finally:
        subprocess.run(as_postgres_user([postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _postgres_step(folder: Path, step: list[str]) -> None:
    done = subprocess.run(as_postgres_user(step), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        pytest.fail(f"PostgreSQL could not be started ({step[0]}):\n{done.stdout}{done.stderr}{log}"[-3000:])


def server_env(db: Database, certs: Path, folder: Path, **extra: str) -> dict[str, str]:
    """The environment deploy/mlflow-server.sh documents, for a server keeping its artifacts in `folder`."""
    return child_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `mlflow` of this venv
        MLFLOW_BACKEND_STORE_URI=db.url("mlflow", "mlflow"), BLIPEXP_AUTH_DATABASE_URI=db.url("mlflow_auth", "mlflow"),
        MLFLOW_ARTIFACTS_DESTINATION=str(folder / "artifacts"), BLIPEXP_TLS_CERT=str(certs / "server.pem"),
        BLIPEXP_TLS_KEY=str(certs / "server.key"), PGPASSFILE=str(db.pgpass("mlflow", folder / "pgpass")),
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16), **extra)


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(["bash", str(DEPLOY / "mlflow-server.sh"), "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.fixture(scope="module")
def server(database, certs, tmp_path_factory):
    folder, port = tmp_path_factory.mktemp("mlflow-server"), free_port()
    admin = (f"admin-{secrets.token_hex(3)}", secrets.token_urlsafe(18))
    env = server_env(database, certs, folder, MLFLOW_AUTH_ADMIN_USERNAME=admin[0], MLFLOW_AUTH_ADMIN_PASSWORD=admin[1])
    process = start_server(env, port, folder / "server.log")
    uri = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(uri, certs / "ca.pem"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"deploy/mlflow-server.sh did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(uri, folder / "artifacts", certs / "ca.pem", admin, env)
    finally:
        kill_group(process)


def _healthy(uri: str, ca: Path) -> bool:
    try:
        return requests.get(f"{uri}/health", verify=str(ca), timeout=2).ok
    except requests.exceptions.RequestException:
        return False


def login(account: str, password: str, ca: Path) -> dict[str, str]:
    return {access.USERNAME_ENV: account, access.PASSWORD_ENV: password, access.CERT_ENV: str(ca)}


@pytest.fixture(scope="module")
def accounts(server, tmp_path_factory) -> dict[str, dict[str, str]]:
    """deploy/accounts.py, run by the admin: a worker, a viewer and a release account. Their logins by role,
    read from the credentials files it wrote."""
    out = tmp_path_factory.mktemp("credentials")
    done = subprocess.run([sys.executable, str(DEPLOY / "accounts.py"), server.uri, "--out", str(out),
                           "worker:sweeper", "viewer:alice", "release:bob"],
                          env={**child_env(), **login(*server.admin, server.ca)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    logins = {}
    for role, name in (("worker", "sweeper"), ("viewer", "alice"), ("release", "bob")):
        path = out / f"{name}.credentials"
        assert path.stat().st_mode & 0o777 == 0o600, "only its owner may read a credentials file"
        credentials = configparser.ConfigParser()
        credentials.read(path)
        assert credentials["mlflow"]["mlflow_tracking_username"] == name
        password = credentials["mlflow"]["mlflow_tracking_password"]
        assert password not in done.stdout + done.stderr, "the script prints no password"
        logins[role] = login(name, password, server.ca)
    return logins


@pytest.fixture
def as_account(monkeypatch, tmp_path):
    """Log this process in as `login` (the environment MLflow's client reads; no ~/.mlflow/credentials)."""
    def use(login: dict[str, str]) -> None:
        monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
        for name in LOGIN_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in login.items():
            monkeypatch.setenv(name, value)
    return use


@dataclass
class Sweep:
    study: object
    killed: object
    outputs: dict
    homes: Path
    argv: dict  # each worker's blipexp arguments, by host


@pytest.fixture(scope="module")
def sweep(database, server, accounts, tmp_path_factory) -> Sweep:
    """Two workers with the worker account share a 2-trial sweep; one is SIGKILLed in the middle of its first trial.
    machine-a passes the study database's password in its --storage URL; machine-b keeps it in a password file
    and takes its URLs from the environment."""
    homes = tmp_path_factory.mktemp("workers")
    storage = database.url("optuna", "blip_worker", password=True)
    args = ["run", "small_sweep", "--experiments", str(SWEEP_EXPERIMENTS), "--trials", "2", "--set", "epochs=1",
            "--set", "pitch_scenes=30", "--set", "test_fraction=0", "--set", "max_new_tokens=6"]  # the least work
    base = child_env(BLIPEXP_HEARTBEAT_SECONDS="3", HOME=str(homes / "user-home"), **accounts["worker"])
    argv = {
        "machine-a": [*args, "--home", str(homes / "machine-a"), "--storage", storage, "--tracking-uri", server.uri],
        "machine-b": [*args, "--home", str(homes / "machine-b")],
    }
    envs = {
        "machine-a": base,
        "machine-b": {**base, "BLIPEXP_STORAGE": database.url("optuna", "blip_worker"),
                      "MLFLOW_TRACKING_URI": server.uri,
                      "PGPASSFILE": str(database.pgpass("blip_worker", homes / "pgpass"))},
    }
    workers = {host: subprocess.Popen([sys.executable, str(WORKER), host, *argv[host]], env=envs[host],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for host in argv}
    killed, outputs = kill_one_mid_trial(workers, storage)
    return Sweep(load_study(storage), killed, outputs, homes, argv)


def test_two_worker_accounts_share_one_sweep_over_tls_and_recover_a_killed_worker(server, accounts, sweep, as_account):
    as_account(accounts["worker"])
    client = mlflow.MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    check_shared_sweep(sweep.study, sweep.killed, 2, ["machine-a", "machine-b"], client, sweep.outputs,
                       server.artifacts, sweep.homes)


def test_a_viewer_run_is_refused_before_any_training(server, accounts, sweep, as_account, tmp_path, capsys):
    as_account(accounts["viewer"])
    home = tmp_path / "viewer-home"
    code = cli.main(["run", "small_sweep", "--experiments", str(SWEEP_EXPERIMENTS), "--home", str(home),
                     "--tracking-uri", server.uri])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith("error: account 'alice' may not run this") and err.count("\n") == 1, err
    assert "READ on experiment 'small_sweep' (needs EDIT to log runs)" in err
    assert "READ on registered model 'small-sweep' (needs EDIT to register versions)" in err
    assert "worker role" in err and access.USERNAME_ENV in err, "names the fix"
    assert not (home / "data").exists() and "data:" not in out, "nothing loaded or trained"


def test_a_viewer_can_caption_and_list_but_an_account_without_a_role_gets_one_line(server, accounts, sweep,
                                                                                    as_account, tmp_path, capsys,
                                                                                    monkeypatch):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (40, 160, 60)).save(image)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    home = ["--home", str(tmp_path / "home")]
    as_account(accounts["viewer"])
    assert cli.main(["caption", "models:/small-sweep/1", str(image), *home]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")
    assert cli.main(["models", *home]) == 0
    assert "small-sweep" in capsys.readouterr().out

    from mlflow.server.auth.client import AuthServiceClient

    as_account(login(*server.admin, server.ca))
    password = secrets.token_urlsafe(18)
    AuthServiceClient(server.uri).create_user("stranger", password)
    as_account(login("stranger", password, server.ca))
    assert cli.main(["caption", "models:/small-sweep/1", str(image), *home]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: MLflow tracking server \S+ refused account 'stranger': permission denied for "
                        r"\S+\. .*\n", err), err


def test_a_viewers_compare_says_in_one_line_it_logs_nothing_and_still_writes_the_page(server, accounts, sweep,
                                                                                        as_account, tmp_path, capsys,
                                                                                        monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    as_account(accounts["viewer"])
    client = mlflow.MlflowClient(tracking_uri=server.uri)
    experiment = client.get_experiment_by_name("small_sweep").experiment_id
    before = {r.info.run_id for r in client.search_runs([experiment])}
    page = tmp_path / "compare.html"
    version = "models:/small-sweep/1"  # against itself: the sweep's data have no test split, so on validation
    code = cli.main(["compare", version, version, "--split", "validation", "--html", str(page),
                     "--home", str(tmp_path / "home")])
    out, err = capsys.readouterr()
    assert code == 0, err
    notes = [line for line in err.split("\n") if "note:" in line]  # besides the model download's progress bar
    assert notes == [f"note: account 'alice' may not log runs on {server.uri}: it has READ on experiment "
                     f"'small_sweep' (needs EDIT to log runs); the comparison was not logged ({page} holds it)"], err
    assert "B - A on cider is +0" in out and f"\n  page        {page}\n" in out and "  run " not in out
    rows = re.search(r"on (\d+) validation images", out)
    assert page.read_text().count('<img src="data:image/jpeg;base64,') == int(rows[1]) > 0
    assert {r.info.run_id for r in client.search_runs([experiment])} == before, "nothing logged"


@pytest.mark.parametrize("case", ["wrong password", "no login", "the old default admin password", "no CA",
                                  "another CA", "stopped server"])
def test_a_login_or_certificate_problem_stops_a_run_with_one_line(server, accounts, as_account, tmp_path, capsys,
                                                                   case):
    worker = accounts["worker"]
    uri = server.uri
    bad = {
        "wrong password": ({**worker, access.PASSWORD_ENV: "not-the-password-1234"},
                           "refused the login of account 'sweeper' (wrong user name or password): check "
                           "$MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD"),
        "no login": ({access.CERT_ENV: worker[access.CERT_ENV]},
                     "requires a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        # MLflow through 3.16.0 created admin / password1234 (CVE-2026-2635); this stack's admin has the password
        # the deployment set, and MLflow 3.17 rejects that old default for any admin
        "the old default admin password": (login(server.admin[0], "password1234", server.ca),
                                           f"refused the login of account '{server.admin[0]}'"),
        "no CA": ({**worker, access.CERT_ENV: ""},
                  "presents a certificate this machine does not trust (unable to get local issuer certificate): set "
                  "$MLFLOW_TRACKING_SERVER_CERT_PATH to the CA certificate that signed it"),
        "another CA": ({**worker, access.CERT_ENV: certifi.where()},
                       f"presents a certificate that the CA in $MLFLOW_TRACKING_SERVER_CERT_PATH ({certifi.where()}) "
                       "did not sign"),
        "stopped server": (worker,
                           "cannot be reached (Connection refused): start it, or check the tracking URI you passed"),
    }
    env, expected = bad[case]
    if case == "stopped server":
        uri = f"https://127.0.0.1:{free_port()}"  # what a stopped server looks like to its clients
    as_account({k: v for k, v in env.items() if v})
    home = tmp_path / "home"
    code = cli.main(["run", "small_sweep", "--experiments", str(SWEEP_EXPERIMENTS), "--home", str(home),
                     "--tracking-uri", uri])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith(f"error: MLflow tracking server {uri} ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "not-the-password" not in err and worker[access.PASSWORD_ENV] not in err
    assert not (home / "data").exists(), "stopped before making data"


def test_only_an_account_that_may_move_the_alias_can_promote(server, accounts, sweep, as_account, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    client = mlflow.MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    promote = ["promote", "small-sweep", "--version", "1", "--home", str(tmp_path / "home")]

    as_account(accounts["viewer"])
    with monkeypatch.context() as patched:  # refused before promote compares, loads or changes anything
        patched.setattr(registry, "promote", lambda *args, **kwargs: pytest.fail("registry.promote was reached"))
        assert cli.main(promote) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: account 'alice' may not promote") and err.count("\n") == 1, err
    assert "READ on registered model 'small-sweep' (needs EDIT to move its alias 'champion')" in err
    assert "release role" in err
    assert client.get_registered_model("small-sweep").aliases == {}, "nothing changed"
    assert "promoted_at" not in client.get_model_version("small-sweep", "1").tags
    assert cli.main(["promote", "no-such-model", *promote[2:]]) == 2  # a typo is named as one, not as a permission
    assert "registered model 'no-such-model' not found" in capsys.readouterr().err

    # MLflow checks moving an alias with the EDIT on the model that registering a version needs: a worker may too
    as_account(accounts["worker"])
    access.require_alias(server.uri, "small-sweep", "champion")

    as_account(accounts["release"])
    assert cli.main(promote) == 0, capsys.readouterr().err
    assert "small-sweep@champion -> version 1" in capsys.readouterr().out
    assert client.get_registered_model("small-sweep").aliases == {"champion": "1"}


def test_no_secret_is_printed_logged_or_written(database, server, accounts, sweep, as_account, tmp_path):
    """The worker's MLflow password and the study database's password appear nowhere blipexp writes: not in MLflow
    (every param, tag, metric name, description and dataset of the tracking database; every artifact: spec.json,
    tables, plots, the models and their cards), not in the study, not under the workers' --home, not on their
    consoles, not in the command that resumes an interrupted worker."""
    worker = accounts["worker"]
    plain = [worker[access.PASSWORD_ENV], database.passwords["blip_worker"]]
    secrets_ = plain + [base64.b64encode(f"sweeper:{plain[0]}".encode()).decode()]  # a Basic auth header
    places = {"tracking database": database.dump("mlflow"), "study database": database.dump("optuna")}
    for root, label in ((server.artifacts, "artifact store"), (sweep.homes, "worker homes")):
        for path in root.rglob("*"):
            if path.is_file() and path.name != "pgpass":  # the README's password file, written by the test
                places[f"{label}: {path.relative_to(root)}"] = path.read_bytes().decode("latin-1")
    for host, (out, err) in sweep.outputs.items():
        places[f"{host} console"] = out + err
    for host, argv in sweep.argv.items():
        places[f"{host} resume command"] = cli.resume_command(argv)
    assert len([p for p in places if p.startswith("artifact store")]) > 10, "the scan reached the artifacts"
    assert any(p.endswith("spec.json") for p in places) and any(p.endswith("README.md") for p in places)
    assert "blip_worker:***@" in places["machine-a resume command"], "the resume command names the URL, masked"
    leaks = [(place, n) for place, text in places.items() for n, secret in enumerate(secrets_) if secret in text]
    assert leaks == [], leaks


def test_the_server_will_not_start_without_an_admin_password_nor_with_the_old_default(certs, tmp_path):
    """MLflow 3.17 ships no admin password: it refuses to create its admin without MLFLOW_AUTH_ADMIN_PASSWORD, and
    refuses `password1234`, the default that MLflow shipped through 3.16.0 (what the `scale` extra's lower bound is
    for). SQLite stores here: only the start matters. Both servers start at once (each takes seconds to fail)."""
    env = child_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        BLIPEXP_TLS_CERT=str(certs / "server.pem"), BLIPEXP_TLS_KEY=str(certs / "server.key"),
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16), MLFLOW_AUTH_ADMIN_USERNAME="admin")
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    cases = {"none": ({}, "needs a password to create the admin user 'admin'"),
             "old default": ({"MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"},
                             "Refusing to use the insecure default password")}
    processes = {}
    for case, (password, _) in cases.items():
        folder = tmp_path / case.replace(" ", "-")
        folder.mkdir()
        stores = {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{folder / 'mlflow.db'}",
                  "BLIPEXP_AUTH_DATABASE_URI": f"sqlite:///{folder / 'auth.db'}",
                  "MLFLOW_ARTIFACTS_DESTINATION": str(folder)}
        processes[case] = start_server({**env, **stores, **password}, free_port(), folder / "server.log")
    try:
        codes = {case: process.wait(timeout=TIMEOUT) for case, process in processes.items()}
    finally:
        for process in processes.values():
            kill_group(process)
    for case, (_, expected) in cases.items():
        log = (tmp_path / case.replace(" ", "-") / "server.log").read_text()
        assert codes[case] != 0 and expected in log, f"{case}: exit {codes[case]}\n{log[-2000:]}"


def test_the_database_takes_only_tls_connections_with_the_right_password(database):
    import psycopg

    tls = f"host=127.0.0.1 port={database.port} dbname=optuna user=blip_worker connect_timeout=10"
    with psycopg.connect(f"{tls} sslmode=verify-full sslrootcert={database.ca}",
                         password=database.passwords["blip_worker"]) as connection:
        assert connection.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(f"{tls} sslmode=disable", password=database.passwords["blip_worker"])
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"{tls} sslmode=verify-full sslrootcert={database.ca}", password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(f"{tls.replace('dbname=optuna', 'dbname=mlflow')} sslmode=verify-full "
                        f"sslrootcert={database.ca}", password=database.passwords["blip_worker"])


@pytest.mark.parametrize("uri, password, warned", [
    ("http://mlflow.internal:5000", "a-password", True),
    ("https://mlflow.internal:5000", "a-password", False),
    ("http://127.0.0.1:5000", "a-password", False),  # never leaves the machine
    ("http://mlflow.internal:5000", None, False),
])
def test_a_password_sent_unencrypted_to_another_machine_draws_a_warning(as_account, uri, password, warned):
    as_account({access.USERNAME_ENV: "sweeper", **({access.PASSWORD_ENV: password} if password else {})})
    warning = access.warn_if_clear_text(uri)
    assert (warning is not None) == warned, warning
    if warned:
        assert warning.startswith(f"warning: the password of the MLflow account goes to {uri} unencrypted")
        assert "HTTPS" in warning and password not in warning
