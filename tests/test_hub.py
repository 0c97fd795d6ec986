"""Tests of blipexp.hub: the quick "does the Hub answer" probe and the path-or-id rule, all offline.

No request leaves the machine: sockets refuse to connect, and the Hub's answers are stood in for by
replacing `HfApi.model_info` / `dataset_info` where a test needs one.
"""
from __future__ import annotations

import socket
import types

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import RepositoryNotFoundError

from blipexp.data.hub import PROBE_TIMEOUT_S, NotAHubId, hub_answers, looks_like_path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    """Online mode as far as the libraries know, but every connection attempt fails (and is recorded)."""
    attempts: list[tuple[object, ...]] = []

    def deny(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket.socket, "connect", deny)
    monkeypatch.setattr(socket, "getaddrinfo", deny)
    monkeypatch.setattr(socket, "create_connection", deny)
    return attempts


def answer_with(monkeypatch: pytest.MonkeyPatch, error: Exception | None) -> list[dict]:
    """The Hub's answer to every info request: `error` raised, or a plain success; returns the requests seen."""
    seen: list[dict] = []

    def answer(kind: str):
        def info(self: HfApi, repo_id: str, **kwargs: object) -> object:
            seen.append({"repo_id": repo_id, "kind": kind, **kwargs})
            if error is not None:
                raise error
            return object()

        return info

    monkeypatch.setattr(HfApi, "model_info", answer("model"))
    monkeypatch.setattr(HfApi, "dataset_info", answer("dataset"))
    return seen


def test_offline_mode_answers_no_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = answer_with(monkeypatch, None)
    assert hub_answers("someone/captions", "dataset") is False
    assert hub_answers("not a valid id!", "model") is False  # offline wins: nothing is validated or asked
    assert seen == []


def test_an_invalid_id_raises_not_a_hub_id_naming_it(no_network: list) -> None:
    # huggingface_hub's own validator rejects the id before any request.
    with pytest.raises(NotAHubId, match=r"dataset='not a valid id!' is neither an existing folder nor a valid Hub "
                                        r"dataset id \(.+\)"):
        hub_answers("not a valid id!", "dataset")
    with pytest.raises(ValueError, match="model='a--b' is neither"):  # NotAHubId is a ValueError
        hub_answers("a--b", "model")
    assert no_network == []


def test_no_network_answers_no(no_network: list) -> None:
    assert hub_answers("someone/captions", "model") is False
    assert no_network, "the probe did try to connect"


def test_an_http_error_is_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    not_found = RepositoryNotFoundError("404 Client Error", response=types.SimpleNamespace(headers={}, request=None))
    answer_with(monkeypatch, not_found)
    assert hub_answers("someone/missing", "model") is True  # the real load then reports "not found" precisely


def test_the_probe_asks_about_the_right_repo_type_and_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    seen = answer_with(monkeypatch, None)
    assert hub_answers("someone/captions", "dataset", revision="v2") is True
    assert hub_answers("someone/blip", "model") is True
    assert seen == [
        {"repo_id": "someone/captions", "kind": "dataset", "revision": "v2", "timeout": PROBE_TIMEOUT_S},
        {"repo_id": "someone/blip", "kind": "model", "revision": None, "timeout": PROBE_TIMEOUT_S},
    ]


def test_callers_name_their_fixes_for_an_invalid_id(no_network: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both readers turn NotAHubId into their own error, which names the fixes (a local folder, --tiny)."""
    from blipexp.data.hub_dataset import _load_hub_dataset
    from blipexp.data.sample import DataSourceError
    from blipexp.model.modeling import ModelSourceError, _load_pretrained

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", False)
    with pytest.raises(DataSourceError, match=r"dataset='not a valid id!' is neither .* Fix: run with --tiny"):
        _load_hub_dataset("not a valid id!", None, None, [])
    with pytest.raises(ModelSourceError, match=r"model='not a valid id!' is neither .* Fix: run with --tiny"):
        _load_pretrained("not a valid id!", None)


@pytest.mark.parametrize(
    ("source", "is_path"),
    [
        ("./captions", True),
        ("../photos", True),
        ("/data/photos", True),
        ("~/photos", True),
        ("C:\\data\\photos", True),  # a Windows path
        ("a/b/c", True),  # Hub ids have at most one "/"
        ("ybelkada/football-dataset", False),
        ("Salesforce/blip-image-captioning-base", False),
        ("pitch", False),
    ],
)
def test_looks_like_path(source: str, is_path: bool) -> None:
    assert looks_like_path(source) is is_path
