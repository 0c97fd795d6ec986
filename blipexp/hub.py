"""One quick question to the Hugging Face Hub: does it answer at all?

Without network, `from_pretrained` and `load_dataset` retry for 25 s to minutes before failing; one request
with a short timeout tells "no network" from "the Hub answered" (even "not found") in seconds.
"""
from __future__ import annotations

from typing import Literal

PROBE_TIMEOUT_S = 5.0


def hub_answers(repo_id: str, repo_type: Literal["model", "dataset"], revision: str | None = None) -> bool:
    """True when the Hub answers about `repo_id`; False without a network. An invalid id raises HFValidationError."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    api = HfApi()
    info = api.model_info if repo_type == "model" else api.dataset_info
    try:
        info(repo_id, revision=revision, timeout=PROBE_TIMEOUT_S)
    except HFValidationError:
        raise
    except HfHubHTTPError:
        return True  # not found, gated, private, server error: the real load reports it precisely
    except Exception:  # DNS failure, refused connection, timeout, proxy error: no Hub here
        return False
    return True


def looks_like_path(source: str) -> bool:
    """True for a string meant as a local folder. Hub ids are `name` or `owner/name`.

    "contains os.sep" alone would not do on POSIX, where every `owner/name` id contains "/".
    """
    return source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1
