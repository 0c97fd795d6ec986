"""A served model's settings: the operator's (environment) and each request's generation settings, checked."""
import numpy as np
import pytest

from blipexp.serving import DEFAULT_GENERATION
from blipexp.serving.serve_settings import BadRequest, Batching, Limits, request_settings


def settings(params, limits=Limits(), positions=64, prompt_positions=lambda prompt: 1 + len(prompt.split())):
    return request_settings(DEFAULT_GENERATION, params, limits, prompt_positions, positions)


def refusal(params, **kwargs) -> str:
    with pytest.raises(BadRequest) as refused:
        settings(params, **kwargs)
    assert isinstance(refused.value, ValueError), "in-process a ValueError; served a 400"
    return str(refused.value.message)


def test_params_override_the_registered_settings_and_none_keeps_them():
    out = settings({"num_beams": 3, "prompt": "a photo of", "max_new_tokens": None})
    assert out == {**DEFAULT_GENERATION, "num_beams": 3, "prompt": "a photo of"}


@pytest.mark.parametrize("key, value, limit, variable", [
    ("batch_size", 0, 32, "BLIPEXP_SERVE_LIMIT_BATCH_SIZE"),
    ("batch_size", 10_000, 32, "BLIPEXP_SERVE_LIMIT_BATCH_SIZE"),
    ("num_beams", 64, 8, "BLIPEXP_SERVE_LIMIT_NUM_BEAMS"),
    ("num_beams", 0, 8, "BLIPEXP_SERVE_LIMIT_NUM_BEAMS"),
    ("max_new_tokens", 100_000, 128, "BLIPEXP_SERVE_LIMIT_MAX_NEW_TOKENS"),
])
def test_costly_params_are_bounded_and_the_refusal_names_the_range_and_its_variable(key, value, limit, variable):
    assert refusal({key: value}, positions=10_000) == \
        f"{key}={value} is outside this server's range of 1-{limit} ({variable}): ask for 1-{limit}"


def test_the_prompt_is_bounded_in_characters_and_must_fit_the_models_positions_with_max_new_tokens():
    assert "prompt's 201 characters are more than this server's limit of 200 (BLIPEXP_SERVE_LIMIT_PROMPT_CHARS)" \
        in refusal({"prompt": "x" * 201})
    assert settings({"max_new_tokens": 64}, positions=64)["max_new_tokens"] == 64, "the last new token needs none"
    assert settings({"max_new_tokens": 62, "prompt": "a b"}, positions=64)["max_new_tokens"] == 62
    assert "max_new_tokens=63 does not fit the model's 64 text positions with this prompt (it takes 3): ask for at " \
           "most 62" in refusal({"max_new_tokens": 63, "prompt": "a b"}, positions=64)


@pytest.mark.parametrize("params, message", [
    ({"min_new_tokens": 50, "max_new_tokens": 20}, "min_new_tokens=50 must be in [0, max_new_tokens=20]"),
    ({"repetition_penalty": 0.0}, "repetition_penalty=0.0 must be > 0"),
    ({"length_penalty": float("nan")}, "length_penalty=nan must be a finite number"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size=-1 must be >= 0"),
    ({"num_beams": 2.5}, "num_beams=2.5 must be a whole number"),
    ({"num_beams": True}, "num_beams=True must be a whole number"),
    ({"prompt": 3}, "prompt=3 must be text"),
])
def test_invalid_params_are_refused_with_the_rule(params, message):
    assert message in refusal(params)


def test_numpy_numbers_are_taken_as_plain_ones():
    out = settings({"num_beams": np.int64(2), "length_penalty": np.float32(0.5)})
    assert (type(out["num_beams"]), type(out["length_penalty"])) == (int, float)


def test_the_operator_sets_limits_and_batching_through_the_environment():
    env = {"BLIPEXP_SERVE_LIMIT_NUM_BEAMS": "2", "BLIPEXP_SERVE_MAX_BATCH": "0", "BLIPEXP_SERVE_MAX_WAIT_MS": "7.5",
           "BLIPEXP_SERVE_BUSY_WAIT_MS": "20", "BLIPEXP_SERVE_REQUEST_THREADS": "24",
           "BLIPEXP_SERVE_CAPTION_TIMEOUT_S": "300"}
    assert Limits.from_env(env) == Limits(num_beams=2)
    assert Batching.from_env(env) == Batching(max_batch=0, max_wait_ms=7.5, busy_wait_ms=20, request_threads=24,
                                              caption_timeout_s=300)
    assert Limits.from_env({}) == Limits() and Batching.from_env({}) == Batching()
    assert "num_beams=3 is outside this server's range of 1-2" in refusal({"num_beams": 3}, limits=Limits.from_env(env))


@pytest.mark.parametrize("variable, value", [
    ("BLIPEXP_SERVE_MAX_BATCH", "-1"), ("BLIPEXP_SERVE_MAX_BATCH", "eight"), ("BLIPEXP_SERVE_MAX_WAIT_MS", "inf"),
    ("BLIPEXP_SERVE_BUSY_WAIT_MS", "-5"), ("BLIPEXP_SERVE_REQUEST_THREADS", "0"),
    ("BLIPEXP_SERVE_CAPTION_TIMEOUT_S", "0"),
    ("BLIPEXP_SERVE_LIMIT_BATCH_SIZE", "0"), ("BLIPEXP_SERVE_LIMIT_MAX_NEW_TOKENS", "1.5"),
])
def test_a_bad_environment_value_names_its_variable(variable, value):
    with pytest.raises(ValueError, match=f"{variable}={value} is not valid: set a .*number >= .*or unset it"):
        (Batching if "LIMIT" not in variable else Limits).from_env({variable: value})
