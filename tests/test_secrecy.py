"""Secrets kept out of everything blipexp prints and writes: the rules (masked URIs, secret names, secret files and
text), the messages about a tracking server whose URI holds a password, and one scan of a whole home after a run,
a sweep, evaluate, rerun and refused commands, with a unique marker planted in each kind of secret."""
from __future__ import annotations

import http.server
import secrets
import sys
import threading

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from processes import free_port
from test_environment import make_checkout

from blipexp import cli, tracking
from blipexp.runtime import environment, secrecy
from blipexp.tracking import access

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop


@pytest.mark.parametrize("uri, shown, hidden", [
    ("postgresql://ana:pw@db.lab:5432/optuna", "postgresql://ana:***@db.lab:5432/optuna", ("pw",)),
    ("postgresql+psycopg://ana:p%40ss/w@db.lab/optuna", "postgresql+psycopg://ana:***@db.lab/optuna",
     ("p%40ss/w", "p@ss/w")),  # an encoded @ and a / in the password
    ("https://bob:pw@mlflow.lab:5000", "https://bob:***@mlflow.lab:5000", ("pw",)),
    ("postgresql://ana@db.lab/optuna?sslmode=verify-full&password=pw",
     "postgresql://ana@db.lab/optuna?sslmode=verify-full&password=***", ("pw",)),
    ("https://mlflow.lab:5000/?token=pw", "https://mlflow.lab:5000/?token=***", ("pw",)),
    ("https://mlflow.lab:5000", None, ()), ("sqlite:////tmp/mlflow.db", None, ()), ("/a/home/mlflow.db", None, ()),
    ("postgresql://ana@db.lab/optuna?sslmode=require", None, ()),
])
def test_a_uri_is_shown_with_its_password_masked_and_an_error_quoting_it_too(uri, shown, hidden):
    assert secrecy.masked(uri) == (shown or uri)
    assert secrecy.password_masked(uri) == shown
    error = f"could not connect to {uri}: password {' or '.join(hidden) or 'none'} refused"
    scrubbed = secrecy.scrubbed(error, uri)
    assert [secret for secret in hidden if secret in scrubbed] == []
    assert scrubbed.startswith(f"could not connect to {shown or uri}: password ")


def test_names_files_and_text_that_hold_secrets():
    assert [name for name in ("hub_token", "HF_TOKEN", "push_to_hub_token", "accessToken", "DB_PASSWORD",
                              "PGPASSWORD", "api_secret", "passwd") if not secrecy.names_secret(name)] == []
    assert [name for name in ("max_new_tokens", "include_num_input_tokens_seen", "tokenizer", "key", "username")
            if secrecy.names_secret(name)] == []
    assert [path for path in ("credentials/bob.credentials", "deploy/credentials.json", ".env", "conf/.env.prod",
                              "server.pem", "ca.key", ".pgpass", "id_rsa", ".netrc", "_netrc", "hf_token.txt")
            if not secrecy.secret_file(path)] == []
    assert [path for path in ("blipexp/train.py", "experiments/football_lora.py", "blipexp/tokenizer_utils.py",
                              "keys.py", "environment.py") if secrecy.secret_file(path)] == []
    holding = ("token = 'x'", "password: x", "DB_PASSWORD=x", '"api_secret": "x"', "hub_token  =  x",
               "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----")
    assert [text for text in holding if not secrecy.holds_secret(text)] == []
    harmless = ("X = 3", "max_new_tokens: int = 30", "if password == other:", "password =", "token", "key = 1")
    assert [text for text in harmless if secrecy.holds_secret(text)] == []


class Answers(http.server.BaseHTTPRequestHandler):
    """A stand-in tracking server: answers every GET with `status` (401: a login refused, 404: no accounts)."""
    status = 404

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def server():
    """A plain-HTTP server on loopback, its port; `Answers.status` says how it answers."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    Answers.status = 404


def test_no_message_about_a_tracking_server_shows_the_password_in_its_uri(server, tmp_path, monkeypatch, capsys):
    """Unreachable, refusing the login, speaking no TLS, refusing a permission, warning of clear text, `ui` and the
    summary's browse line: each names the server with its password masked."""
    secret = secrets.token_hex(8)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    monkeypatch.setenv(access.USERNAME_ENV, "sweeper")
    monkeypatch.setenv(access.PASSWORD_ENV, "not-in-the-uri")
    uri = f"http://bob:{secret}@127.0.0.1:{server}"
    messages = []
    for target, status in ((f"http://bob:{secret}@127.0.0.1:{free_port()}", 404), (uri, 401),
                           (f"https://bob:{secret}@127.0.0.1:{server}", 404)):
        Answers.status = status
        with pytest.raises(ValueError) as refused:
            access.check_server(target, "check the URI")
        messages.append(str(refused.value))
    assert "cannot be reached" in messages[0] and "refused the login of account 'sweeper'" in messages[1]
    assert messages[2].startswith(f"TLS with MLflow tracking server https://bob:***@127.0.0.1:{server} failed")
    messages.append(access.warn_if_clear_text(f"http://bob:{secret}@mlflow.lab:5000"))

    Answers.status = 404  # a server without accounts: `ui` and the browse line name it
    monkeypatch.delenv(access.PASSWORD_ENV)
    before = mlflow.get_tracking_uri()
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, uri)
    try:
        assert cli.main(["ui", "--home", str(tmp_path / "home")]) == 0
        messages.append(tracking.ui_command(tmp_path / "home"))
        refused = MlflowException(f"denied for url: {uri}/api/2.0/x", error_code=PERMISSION_DENIED)
        messages.append(access.refusal(refused))
    finally:
        mlflow.set_tracking_uri(before)
    messages.append(capsys.readouterr().out)
    assert messages[-1] == f"runs go to the MLflow tracking server http://bob:***@127.0.0.1:{server}: open it in a " \
                           "browser (it serves the UI)\n"
    assert messages[-3].startswith(f"http://bob:***@127.0.0.1:{server}/#/experiments?")
    assert f"for http://bob:***@127.0.0.1:{server}/api/2.0/x" in messages[-2]
    assert all(message and "bob:***@" in message for message in messages), messages
    assert [message for message in messages if secret in message] == []


SINGLE = '''"""Hypothesis: nothing a run writes holds a secret."""
from blipexp import ExperimentSpec


class SecretSmall(ExperimentSpec):
    model = "tiny"
    dataset = "pitch"
    pitch_scenes = 24
    epochs = 1
    train_batch_size = 8
    precision = "fp32"
    sample_captions = 0
    max_new_tokens = 6
    registered_model = "secret-small"
'''

SWEEP = '''"""Hypothesis: nothing a sweep writes holds a secret."""
from blipexp import Choice

from .secret_small import SecretSmall


class SecretSweep(SecretSmall):
    n_trials = 2
    registered_model = "secret-sweep"

    def search_space(self):
        return {"learning_rate": Choice((3e-3, 1e-7))}
'''


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Query string argument.s. 'password' are not accepted")  # SQLite's: expected
@pytest.mark.filterwarnings("ignore:Target and region quantiles select the same set of trials")  # 2 trials
def test_no_planted_secret_reaches_anything_blipexp_writes_or_prints(tmp_path, home, monkeypatch, capfd):
    """A marker in each kind of secret: files in the checkout the environment record reads (a credentials file, a
    .env, a .pem key, code holding a token), a trainer.hub_token on the command line (refused), a password in a
    refused --tracking-uri and --storage, one in the query of a --storage the sweep uses, and $HF_TOKEN and
    $MLFLOW_TRACKING_PASSWORD. After a run, a 2-trial sweep, evaluate and rerun in one home, no byte of any file under
    it (the MLflow database and artifacts, the study's database, the data and caches) nor of the console holds one."""
    marker = {kind: f"{kind}-{secrets.token_hex(6)}" for kind in (
        "credentials", "env-file", "pem", "code", "hub-token", "tracking-uri", "storage", "storage-query", "hf-env",
        "mlflow-env")}
    package = make_checkout(tmp_path / "checkout")
    (package.parent / "credentials").mkdir()
    (package.parent / "credentials" / "bob.credentials").write_text(
        f"[mlflow]\nmlflow_tracking_username = bob\nmlflow_tracking_password = {marker['credentials']}\n")
    (package.parent / ".env").write_text(f"DB_URL=postgresql://blip:{marker['env-file']}@db/optuna\n")
    (package.parent / "server.pem").write_text(f"-----BEGIN PRIVATE KEY-----\n{marker['pem']}\n")
    (package / "hub.py").write_text(f"HUB_TOKEN = '{marker['code']}'\n")
    (package / "harmless.py").write_text("X = 3\n")  # copied: the diff was logged
    monkeypatch.setattr(environment, "PACKAGE_DIR", package)
    monkeypatch.setenv("HF_TOKEN", marker["hf-env"])
    monkeypatch.setenv(access.PASSWORD_ENV, marker["mlflow-env"])
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "secret_small.py").write_text(SINGLE)
    (experiments / "secret_sweep.py").write_text(SWEEP)
    for module in [m for m in sys.modules if m.endswith((".secret_small", ".secret_sweep"))]:
        del sys.modules[module]

    def blipexp(*argv: str) -> tuple[int, str]:
        code = cli.main([*argv, "--home", str(home), "--experiments", str(experiments)])
        out, err = capfd.readouterr()
        console.append(out + err)
        return code, err

    console = []
    hub_token = ("--set", f"trainer.hub_token={marker['hub-token']}")
    refused = {
        "hub_token": blipexp("run", "secret_small", *hub_token),
        "tracking": blipexp("run", "secret_small", "--tracking-uri",
                            f"http://bob:{marker['tracking-uri']}@127.0.0.1:{free_port()}"),
        "storage": blipexp("run", "secret_sweep", "--storage",
                           f"postgresql://blip:{marker['storage']}@127.0.0.1:{free_port()}/optuna"),
    }
    assert blipexp("run", "secret_small")[0] == 0
    storage = f"sqlite:///{home / 'study.db'}?password={marker['storage-query']}"  # SQLite ignores it, with a warning
    assert blipexp("run", "secret_sweep", "--storage", storage)[0] == 0
    assert blipexp("evaluate", "models:/secret-small/1")[0] == 0
    refused["evaluate hub_token"] = blipexp("evaluate", "models:/secret-small/1", *hub_token)
    refused["rerun hub_token"] = blipexp("rerun", "models:/secret-small/1", *hub_token)
    assert blipexp("rerun", "models:/secret-small/1")[0] == 0

    places = {f"console of command {n}": text for n, text in enumerate(console)}
    places |= {str(path.relative_to(home)): path.read_bytes().decode("latin-1")
               for path in home.rglob("*") if path.is_file()}
    leaks = [(place, kind) for place, text in places.items() for kind, value in marker.items() if value in text]
    assert leaks == []
    # what makes the scan mean something: it reached the databases, the pickled Trainer arguments and the diffs
    assert "study.db" in places and "mlflow.db" in places and any(p.endswith("training_args.bin") for p in places)
    diffs = [text for place, text in places.items() if place.endswith(environment.DIFF_ARTIFACT)]
    assert len(diffs) >= 4 and all("+X = 3\n" in diff and "# not copied: credentials/bob.credentials (" in diff
                                   for diff in diffs), "every training run logged the checkout's changes"
    # and each refusal said why, with the password masked
    assert {name: code for name, (code, _) in refused.items()} == dict.fromkeys(refused, 2)
    for name in ("hub_token", "evaluate hub_token", "rerun hub_token"):
        assert "trainer.hub_token would hold a secret" in refused[name][1] and "HF_TOKEN" in refused[name][1], name
    assert "MLflow tracking server http://bob:***@127.0.0.1:" in refused["tracking"][1]
    assert "Optuna storage postgresql://blip:***@127.0.0.1:" in refused["storage"][1]
