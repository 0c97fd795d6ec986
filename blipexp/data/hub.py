"""One quick question to the Hugging Face Hub: does it answer at all?

Without network, `from_pretrained` and `load_dataset` retry for 25 s to minutes before failing; one request
with a short timeout tells "no network" from "the Hub answered" (even "not found") in seconds.
"""
from __future__ import annotations

from typing import Literal

PROBE_TIMEOUT_S = 5.0


class NotAHubId(ValueError):
    """The string is not a valid Hub id (and, as its caller checked first, no existing folder either)."""


def hub_answers(repo_id: str, repo_type: Literal["model", "dataset"], revision: str | None = None) -> bool:
    """True when the Hub answers about `repo_id` (even "not found"); False in offline mode or without a network.

    Raises NotAHubId when `repo_id` cannot be a Hub id: the caller names the fix (a local folder, --tiny).
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    if constants.is_offline_mode():  # HF_HUB_OFFLINE: the user asked for no requests at all
        return False
    api = HfApi()
    info = api.model_info if repo_type == "model" else api.dataset_info
    try:
        info(repo_id, revision=revision, timeout=PROBE_TIMEOUT_S)
    except HFValidationError as exc:
        raise NotAHubId(f"{repo_type}={repo_id!r} is neither an existing folder nor a valid Hub {repo_type} id "
                        f"({exc})") from None
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
