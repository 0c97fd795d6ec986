"""MLflow's scoring app (what `mlflow models serve` runs) answering HTTP on a loopback port, in a thread of this
process: for tests of what a served model answers, where the server's own process is not what is tested (a
`mlflow models serve` start costs ~15 s of CPU; tests/test_serving.py keeps real ones)."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from processes import free_port


@dataclass(frozen=True)
class App:
    url: str


@contextlib.contextmanager
def scoring_app(model_uri: str, start_timeout_s: float = 60) -> Iterator[App]:
    """Load `model_uri` as the server would (in this process's environment: set its variables first) and answer
    /invocations at the yielded `url` until the block ends."""
    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    environment = dict(os.environ)  # init() marks the process as a serving environment: undone below
    try:
        app = scoring_server.init(mlflow.pyfunc.load_model(model_uri))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + start_timeout_s
            while not server.started:
                assert thread.is_alive(), "the scoring app stopped while starting"
                assert time.monotonic() < deadline, f"the scoring app did not start within {start_timeout_s} s"
                time.sleep(0.05)
            yield App(f"http://127.0.0.1:{server.config.port}")
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    finally:
        os.environ.clear()
        os.environ.update(environment)
