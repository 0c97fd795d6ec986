"""MLflow tracking, the one place blipexp talks to MLflow runs: where runs are stored and how to browse them
(store.py), how a run is started, written and ended (runs.py) and named (names.py), a tracking server's door
(access.py), a run's logged final scores (scores.py), a run's model as a model to score and an evaluation run
(evaluations.py), a comparison's side-by-side table as a run artifact (comparisons.py). Imports runtime, experiment,
data, model, scoring. The rest of blipexp imports this package:
`from blipexp import tracking`, then `tracking.configure(home)`, `tracking.start_run(...)`."""
from .names import run_name
from .runs import (
    WRITE_EVERY_SECONDS,
    WRITES,
    Run,
    WriteStats,
    end_active,
    experiment_runs,
    find_runs,
    new_run,
    no_artifact_progress_bar,
    reopen,
    run_tags,
    start_run,
    timed,
)
from .store import (
    DEFAULT_HOME,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_VIEW,
    REGISTRY_URI_ENV,
    TRACKING_URI_ENV,
    TRAINING_KIND,
    UI_PORT,
    configure,
    current_uri,
    is_server,
    resolve_home,
    tracking_uri,
    ui_command,
    ui_link,
    use_experiment,
)

__all__ = ["DEFAULT_HOME", "EXPERIMENT_KIND_TAG", "MODEL_TRAINING_VIEW", "REGISTRY_URI_ENV", "Run",
           "TRACKING_URI_ENV", "TRAINING_KIND", "UI_PORT", "WRITES", "WRITE_EVERY_SECONDS", "WriteStats", "configure",
           "current_uri", "end_active", "experiment_runs", "find_runs", "is_server", "new_run",
           "no_artifact_progress_bar", "reopen", "resolve_home", "run_name", "run_tags", "start_run", "timed",
           "tracking_uri",
           "ui_command", "ui_link", "use_experiment"]
