"""The MLflow UI in a real headless chromium: a tiny sweep's runs and its promoted model, as a person sees them.

`python -m blipexp ui` serves a temp home holding a two-trial sweep whose registered version is promoted to
`champion`; chromium (Debian's package: without it the browser tests skip, or fail under CI=true) is driven
over its DevTools pipe (`--remote-debugging-pipe`: NUL-separated JSON on the browser's fds 3 and 4, no websocket
library needed).
The UI is a React app, so each check polls the rendered text until it shows what it must (bounded).
Screenshots go to the test's tmp dir and to tests/artifacts/ (git-ignored), whose paths are printed.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import REPO, require_tool
from PIL import Image
from processes import child_env, free_port, kill_group, wait_for_health

from blipexp import cli, tracking

SWEEPS = REPO / "tests" / "experiments_sweep"
ARTIFACTS = REPO / "tests" / "artifacts"
MODEL = "small-sweep"  # small_sweep's registered_model
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1400,1000"]
WAIT_S = 60  # for the UI server to answer, and for a page to render what it must


# --------------------------------------------------------------------------- helpers

def chromium() -> str:
    """The chromium executable: a missing one skips the test (fails it under CI=true)."""
    return require_tool("chromium", "apt-get install -y chromium (Debian, as root), or put chromium on PATH")


def save_screenshot(browser: "Browser", tmp_path: Path, name: str, capsys, *shown: str) -> Path:
    """Screenshot once every text in `shown` is drawn inside the window, into the test's tmp dir and tests/artifacts/
    (which ignores itself in git); print both. The picture must be the window, and not blank."""
    browser.wait_until(f"({IN_VIEW})({json.dumps(shown)}).length === 0",
                       lambda: f"not drawn inside the window: {browser.evaluate(f'({IN_VIEW})({json.dumps(shown)})')}")
    shot = tmp_path / f"{name}.png"
    browser.screenshot(shot)
    width, height = browser.evaluate("[innerWidth * devicePixelRatio, innerHeight * devicePixelRatio]")
    with Image.open(shot) as picture:
        assert picture.size == (width, height), f"{shot}: {picture.size}, the window is {width}x{height}"
        colours = picture.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 64, f"{shot} is nearly blank: {len(colours)} colours"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")  # screenshots never go in git
    shutil.copy(shot, ARTIFACTS / shot.name)
    with capsys.disabled():
        print(f"\nscreenshot: {ARTIFACTS / shot.name}  (also {shot})")
    return shot


# JavaScript: the texts among `needles` that no element on the page shows, as its own text, inside the window
IN_VIEW = """needles => needles.filter(needle => ![...document.querySelectorAll('body *')].some(e => {
    if (![...e.childNodes].some(c => c.nodeType === 3 && c.textContent.includes(needle))) return false;
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth;
}))"""


def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """A pipe's ends moved to fds >= 10, clear of the 3 and 4 that the child's redirections assign."""
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return moved


class Browser:
    """Headless chromium over --remote-debugging-pipe: it reads commands on fd 3 and answers on fd 4."""

    def __init__(self, executable: str, profile: Path, log) -> None:
        to_child, self._send_fd = _high(os.pipe())
        self._recv_fd, from_child = _high(os.pipe())
        script = f'exec "$0" "$@" 3<&{to_child} 4>&{from_child} {to_child}<&- {from_child}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", script, executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_child, from_child), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._last_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        """Send one DevTools command and return its result (events in between are skipped)."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params,
                   **({"sessionId": session} if session else {})}
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._last_id:
                if "error" in answer:
                    raise RuntimeError(f"chromium refused {method}: {answer['error']}")
                return answer.get("result", {})

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._recv_fd], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._recv_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe (crashed?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, *needles: str) -> str:
        """Navigate to url and wait until the page's text shows every needle; return that text."""
        self.call("Page.navigate", session=self.session, url=url)
        return self.wait_for(*needles)

    def wait_for(self, *needles: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while True:
            text = (self.evaluate("document.body ? document.body.innerText : ''") or "").replace("\xa0", " ")
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"after {WAIT_S} s the page still lacks {missing}; it shows:\n{text[:3000]}")
            time.sleep(0.5)

    def wait_until(self, condition: str, explain) -> None:
        """Poll a JavaScript condition until it is true; past WAIT_S fail with explain()."""
        deadline = time.monotonic() + WAIT_S
        while not self.evaluate(condition):
            if time.monotonic() > deadline:
                raise AssertionError(f"after {WAIT_S} s: {explain()}")
            time.sleep(0.5)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        kill_group(self.process)
        os.close(self._send_fd)
        os.close(self._recv_fd)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def swept(tmp_path_factory, new_home):
    """A two-trial, one-epoch sweep in a temp home, its version promoted to champion: (home, experiment id, runs)."""
    home = new_home()
    common = ["--home", str(home), "--experiments", str(SWEEPS)]
    # system metrics every 0.5 s (default 10): a one-epoch tiny trial lasts seconds, and its run must hold some
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
        small = ["--trials", "2", "--set", "epochs=1", "--set", "max_new_tokens=6"]
        assert cli.main(["run", "small_sweep", *common, *small]) == 0  # the pages, not the scores: short captions
    assert cli.main(["promote", MODEL, "--version", "1", *common]) == 0
    tracking.configure(home)
    experiment_id = mlflow.get_experiment_by_name("small_sweep").experiment_id
    runs = mlflow.search_runs([experiment_id], output_format="list")
    return home, experiment_id, runs


@pytest.fixture(scope="module")
def ui(swept, tmp_path_factory):
    """`python -m blipexp ui` on a free loopback port; yields (base url, its log file)."""
    home = swept[0]
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "blipexp", "ui", "--port", str(port), "--home", str(home)],
                                  env=child_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(server, base, WAIT_S, log.read_text)
        yield base, log
    finally:
        kill_group(server)


@pytest.fixture(scope="module")
def chromium_session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chromium")
    with (folder / "chromium.log").open("w") as log:
        session = Browser(chromium(), folder / "profile", log)
    yield session
    session.close()


@pytest.fixture(scope="module")
def browser(chromium_session, swept, ui):
    """The browser of a person who followed `blipexp ui`'s hint once: the model-training view chosen and the
    Assistant panel closed (both kept by the browser), so pages and screenshots show what that person sees."""
    chromium_session.open(f"{ui[0]}/#/experiments", "small_sweep", "MLflow Assistant")
    assert chromium_session.evaluate("""(() => {
        const close = document.querySelector('button[data-component-id="mlflow.assistant.chat_panel.close"]');
        const labels = [...document.querySelectorAll('span')].filter(e => e.textContent.trim() === 'Model training');
        close?.click();
        labels.at(-1)?.click();
        return Boolean(close) && labels.length > 0;
    })()"""), "the Assistant panel's close button and the 'Model training' switch"
    chromium_session.wait_until(
        "!document.querySelector('button[data-component-id=\"mlflow.assistant.chat_panel.close\"]')",
        lambda: "the Assistant panel did not close")
    return chromium_session


# --------------------------------------------------------------------------- tests

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# Tests that need chromium ask for `browser` first, which asks for chromium first: without chromium they skip
# before the sweep is run.


def test_experiment_page_shows_the_sweep_run_with_its_nested_trials(browser, swept, ui, tmp_path, capsys):
    _, experiment_id, runs = swept
    parent = next(r for r in runs if r.data.tags.get("blipexp.role") == "sweep")
    trials = trial_names(runs)
    assert [name.startswith(f"small_sweep · trial {n} · lr=") for n, name in enumerate(trials)] == [True, True]
    assert len(set(trials)) == 2 and parent.info.run_name.startswith("small_sweep · sweep · "), "told apart"

    text = browser.open(f"{ui[0]}/#/experiments/{experiment_id}/runs", "small_sweep", parent.info.run_name)
    assert not any(name in text for name in trials), "trials are nested: hidden until their parent is expanded"
    assert browser.evaluate("""(() => {
        const expand = document.querySelector('.ag-row button[data-component-id*="runnamecellrenderer"]');
        if (expand) expand.click();
        return Boolean(expand);
    })()"""), "the sweep run's row has an expand button for its nested runs"
    browser.wait_for(parent.info.run_name, *trials)
    save_screenshot(browser, tmp_path, "ui-experiment-runs", capsys, parent.info.run_name, *trials)


def test_run_pages_show_the_sweep_and_trial_metrics(browser, swept, ui, tmp_path, capsys):
    _, experiment_id, runs = swept
    parent = next(r for r in runs if r.data.tags.get("blipexp.role") == "sweep")
    _, trial = best_trial_run(swept)
    cider = repr(trial.data.metrics["val_cider"])  # the UI shows the full value, as JavaScript prints it

    page = f"{ui[0]}/#/experiments/{experiment_id}/runs"
    text = browser.open(f"{page}/{parent.info.run_id}", parent.info.run_name, "best_objective", *trial_names(runs))
    assert "child runs" in text.lower()
    text = browser.open(f"{page}/{trial.info.run_id}", trial.info.run_name, "val_cider", cider)
    assert parent.info.run_name in text, "a trial's page names its parent sweep run"
    browser.evaluate("""[...document.querySelectorAll('h1,h2,h3,h4,span,div')]
        .find(e => e.children.length === 0 && e.textContent.startsWith('Metrics ('))?.scrollIntoView()""")
    save_screenshot(browser, tmp_path, "ui-trial-run", capsys, "val_cider", cider)


def test_trials_compare_in_the_chart_view(browser, swept, ui, tmp_path, capsys):
    """The README's compare screenshot: the sweep expanded, then the chart view, one chart per metric over trials."""
    _, experiment_id, runs = swept
    parent, _ = best_trial_run(swept)
    page = f"{ui[0]}/#/experiments/{experiment_id}/runs"
    browser.open(page, parent.info.run_name)
    browser.evaluate("""Object.keys(localStorage).filter(key => key.includes('ExperimentPage'))
        .forEach(key => localStorage.removeItem(key))""")  # the UI remembers expanded rows: start from none
    browser.open("about:blank")
    browser.open(page, parent.info.run_name)
    browser.evaluate("document.querySelector('.ag-row button[data-component-id*=\"runnamecellrenderer\"]').click()")
    browser.wait_for(*trial_names(runs))
    assert browser.evaluate("""(() => {
        const chart = document.querySelector('input[value="CHART"]');  // the table/chart switch: icons, no text
        if (chart) chart.click();
        return Boolean(chart);
    })()"""), "the runs page has a chart view switch"
    browser.wait_for("Model metrics", "best_objective", *trial_names(runs))  # a chart per metric, each trial a colour
    drawn = """(() => { const plots = [...document.querySelectorAll('.js-plotly-plot')];
        return plots.length > 0 && plots.every(p => p.querySelectorAll('.point path').length >= 1)
            && plots.some(p => p.querySelectorAll('.point path').length >= 2); })()"""
    browser.wait_until(drawn, lambda: "the metric charts did not draw their bars (one per run holding the metric)")
    save_screenshot(browser, tmp_path, "ui-compare-trials", capsys, "best_objective")


def best_trial_run(swept):
    _, _, runs = swept
    parent = next(r for r in runs if r.data.tags.get("blipexp.role") == "sweep")
    best = str(int(parent.data.metrics["best_trial"]))
    return parent, next(r for r in runs if r.data.tags.get("optuna_trial") == best)


def trial_names(runs) -> list[str]:
    """The trials' run names, in trial order (the experiment, the trial, its learning rate, a short id)."""
    trials = sorted((r for r in runs if "optuna_trial" in r.data.tags), key=lambda r: int(r.data.tags["optuna_trial"]))
    return [r.info.run_name for r in trials]


def test_a_trial_shows_its_dataset_and_system_metrics(browser, swept, ui, tmp_path, capsys):
    _, experiment_id, _ = swept
    _, trial = best_trial_run(swept)
    (dataset,) = trial.inputs.dataset_inputs
    page = f"{ui[0]}/#/experiments/{experiment_id}/runs/{trial.info.run_id}"
    browser.open(page, trial.info.run_name, dataset.dataset.name, dataset.dataset.digest)  # "Datasets used"
    save_screenshot(browser, tmp_path, "ui-trial-dataset", capsys, dataset.dataset.name)
    assert any(key.startswith("system/cpu_utilization") for key in trial.data.metrics), "the run holds system metrics"
    browser.open(f"{page}/system-metrics", "cpu_utilization_percentage")
    save_screenshot(browser, tmp_path, "ui-trial-system-metrics", capsys, "cpu_utilization_percentage")


def test_a_trial_shows_its_sample_captions_for_every_epoch(browser, swept, ui, tmp_path, capsys):
    _, experiment_id, _ = swept
    _, trial = best_trial_run(swept)
    table = json.loads(mlflow.artifacts.load_text(f"runs:/{trial.info.run_id}/val_samples_by_epoch.json"))
    epoch_column = table["columns"].index("epoch")
    assert sorted({row[epoch_column] for row in table["data"]}) == [0, 1], "epoch 0 (untrained) and each epoch"
    prediction = table["data"][-1][table["columns"].index("prediction")]
    page = f"{ui[0]}/#/experiments/{experiment_id}/runs/{trial.info.run_id}/artifacts/val_samples_by_epoch.json"
    browser.open(page, "val_samples_by_epoch.json", "prediction", prediction)
    save_screenshot(browser, tmp_path, "ui-trial-sample-captions", capsys, "prediction")


def test_the_sweep_run_shows_the_intermediate_values_plot(browser, swept, ui, tmp_path, capsys):
    _, experiment_id, _ = swept
    parent, _ = best_trial_run(swept)
    page = f"{ui[0]}/#/experiments/{experiment_id}/runs/{parent.info.run_id}/artifacts/plots/intermediate_values.png"
    browser.open("about:blank")  # a full load: the artifact view keeps an earlier run's selection across hash changes
    browser.open(page, "intermediate_values.png")
    # the viewer shows the PNG (fetched, then drawn from a blob: URL) at its size: 640 px wide, unlike any icon
    browser.wait_until("[...document.images].some(i => i.complete && i.naturalWidth >= 400)",
                       lambda: "the intermediate-values plot did not render: " + browser.evaluate(
                           "[...document.images].map(i => i.src.slice(0, 60) + ' ' + i.naturalWidth).join('; ')"))
    save_screenshot(browser, tmp_path, "ui-sweep-intermediate-values", capsys, "intermediate_values.png")


def test_registered_model_page_shows_the_version_with_its_alias(browser, swept, ui, tmp_path, capsys):
    version = mlflow.MlflowClient().get_model_version(MODEL, "1")
    text = browser.open(f"{ui[0]}/#/models/{MODEL}/versions/1", MODEL, "Version 1", "@ champion", "objective",
                        version.tags["objective"][:6])
    assert "previous_champion" in text and "promoted_at" in text
    save_screenshot(browser, tmp_path, "ui-model-version", capsys, "Version 1", "champion")
    browser.open(f"{ui[0]}/#/models/{MODEL}", "Version 1", "@ champion")


# JavaScript: true once the page shows pictures (those whose address contains `part`) and every one has loaded
THUMBNAILS_DRAWN = """part => { const shown = [...document.images].filter(i => i.src.includes(part));
    return shown.length > 0 && shown.every(i => i.complete && i.naturalWidth > 0); }"""


def test_a_per_image_table_shows_each_images_thumbnail(browser, swept, ui, tmp_path, capsys):
    _, experiment_id, _ = swept
    _, trial = best_trial_run(swept)
    keys = tracking.Run(trial.info.run_id).table_columns("per_image/validation.json")["key"]
    page = f"{ui[0]}/#/experiments/{experiment_id}/runs/{trial.info.run_id}/artifacts/per_image/validation.json"
    browser.open("about:blank")  # a full load: the artifact view keeps an earlier run's selection across hash changes
    browser.open(page, "validation.json", "key", "prediction", keys[0])
    browser.wait_until(f"({THUMBNAILS_DRAWN})('table_images')", lambda: "the table's pictures did not render: " +
                       browser.evaluate("[...document.images].map(i => i.src.slice(-60) + ' ' + i.naturalWidth)"
                                        ".join('; ')"))
    save_screenshot(browser, tmp_path, "ui-trial-per-image-table", capsys, "prediction")


def test_the_compare_page_shows_every_thumbnail(browser, swept, tmp_path, capsys):
    """`compare --html`'s page, opened from its file: every row's picture is inline and drawn."""
    home = swept[0]
    page = tmp_path / "compare.html"
    version = f"models:/{MODEL}/1"  # against itself: both read from the evaluation cache, nothing captioned
    assert cli.main(["compare", version, version, "--html", str(page), "--home", str(home)]) == 0
    rows = page.read_text().count("<tr><td>")
    browser.open(page.as_uri(), "caption_a", "caption_b", "difference")
    browser.wait_until(f"({THUMBNAILS_DRAWN})('data:image/jpeg') && document.images.length === {rows}",
                       lambda: f"of {rows} rows' pictures, drawn: " + str(browser.evaluate(
                           "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")))
    save_screenshot(browser, tmp_path, "compare-page", capsys, "caption_a")


def test_loopback_ui_prints_no_warning(ui):
    log = ui[1].read_text()
    assert "MLflow UI on http://127.0.0.1:" in log
    assert "no authentication" not in log


@pytest.mark.parametrize("host", ["0.0.0.0"])
def test_ui_on_other_interfaces_warns_that_it_has_no_authentication(tmp_path, host):
    """The warning comes first; the server is stopped as soon as it is seen (nothing stays exposed)."""
    server = subprocess.Popen([sys.executable, "-m", "blipexp", "ui", "--host", host, "--port", str(free_port()),
                               "--home", str(tmp_path / "home")],
                              env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        first = server.stderr.readline()
    finally:
        kill_group(server)
    assert first.startswith(f"warning: the MLflow UI has no authentication; binding {host} exposes every run")


def test_the_printed_link_opens_the_model_training_view_and_the_hint_is_true(chromium_session, swept, ui,
                                                                            tmp_path_factory):
    """MLflow 3.17 opens a new browser in its GenAI view with its Assistant panel open. `blipexp ui` prints a link
    that asks for the model-training view, and a hint: click 'Model training' once (kept) and close the panel.
    Each step is checked in a browser with a fresh profile, so this fails when MLflow changes what the hint says."""
    _, experiment_id, _ = swept
    log = ui[1].read_text()
    link = re.search(r"MLflow UI on (\S+)", log)[1]
    assert link == f"{ui[0]}/#/experiments?workflowType=machine_learning"
    assert "click 'Model training' at the top left once" in log and "close the MLflow Assistant panel" in log
    folder = tmp_path_factory.mktemp("fresh-browser")
    with (folder / "chromium.log").open("w") as out:
        fresh = Browser(chromium(), folder / "profile", out)
    try:
        text = fresh.open(link, "small_sweep", "Model registry")  # the model-training sidebar
        assert "Observability" not in text, "the GenAI sidebar"
        experiment = f"{ui[0]}/#/experiments/{experiment_id}"  # a link without the parameter
        fresh.open("about:blank")
        fresh.open(experiment, "small_sweep", "MLflow Assistant")  # the panel opens by itself, once per browser
        fresh.wait_until("location.href.includes('workflowType=genai')", lambda: "MLflow's default is no longer "
                         f"its GenAI view: {fresh.evaluate('location.href')}; drop the hint from cli.cmd_ui")
        clicked = fresh.evaluate("""(() => {
            const labels = [...document.querySelectorAll('span')].filter(e => e.textContent.trim() === 'Model training');
            labels.at(-1)?.click();
            return labels.length > 0;
        })()""")
        assert clicked, "no 'Model training' switch at the top left"
        fresh.open("about:blank")
        fresh.open(experiment, "small_sweep")
        fresh.wait_until("location.href.includes('workflowType=machine_learning')",
                         lambda: f"the choice was not kept: {fresh.evaluate('location.href')}")
    finally:
        fresh.close()
