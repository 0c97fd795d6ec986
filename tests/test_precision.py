"""precision=auto: the probe, its cache under the home, and the rule that picks fp32 or bf16 from its figures."""
import json
import math

import pytest
import torch

from blipexp.model import precision
from blipexp.model.tiny import build_tiny_model, build_tiny_processor


@pytest.fixture
def home(tmp_path):
    """A home without the session's probe (conftest copies that into the shared `home`): these tests probe."""
    path = tmp_path / "bare-home"
    path.mkdir()
    return path

SHAPES = [(64, 32, 64), (16, 32, 64)]


class CountingProbe:
    """Constructed probe results, and how often the cache asked for a measurement."""

    def __init__(self, fp32: float, bf16: float):
        self.figures, self.calls = {"fp32": fp32, "bf16": bf16}, 0

    def __call__(self, shapes):
        self.calls += 1
        return dict(self.figures)


def test_the_probe_runs_once_per_machine_and_shapes_and_is_reused(home):
    probe = CountingProbe(100.0, 160.0)
    assert precision.cached_probe(home, SHAPES, probe) == ({"fp32": 100.0, "bf16": 160.0}, False)
    assert precision.cached_probe(home, SHAPES, probe) == ({"fp32": 100.0, "bf16": 160.0}, True)
    assert probe.calls == 1, "the second run reads the cache"
    stored = json.loads((home / "cache" / "precision.json").read_text())
    (entry,) = stored.values()
    assert entry["key"]["shapes"] == [list(s) for s in SHAPES] and entry["key"]["torch"] == torch.__version__
    precision.cached_probe(home, [(128, 32, 64)], probe)
    assert probe.calls == 2, "other shapes (another model or batch) are measured"


@pytest.mark.parametrize("changed", ["cpu", "cpu_flags", "gpu", "torch", "threads"])
def test_the_probe_runs_again_when_the_machine_changes(home, monkeypatch, changed):
    probe = CountingProbe(100.0, 160.0)
    precision.cached_probe(home, SHAPES, probe)
    current = precision.machine()
    monkeypatch.setattr(precision, "machine", lambda: {**current, changed: current[changed] + "-other"})
    assert precision.cached_probe(home, SHAPES, probe)[1] is False
    assert probe.calls == 2


def test_a_damaged_cache_is_measured_again(home):
    (home / "cache").mkdir()
    (home / "cache" / "precision.json").write_text("{not json")
    probe = CountingProbe(100.0, 160.0)
    assert precision.cached_probe(home, SHAPES, probe) == ({"fp32": 100.0, "bf16": 160.0}, False)
    assert precision.cached_probe(home, SHAPES, probe)[1] is True


def test_the_machine_key_reads_the_cpu():
    key = precision.machine()
    assert set(key) == {"cpu", "cpu_flags", "gpu", "torch", "threads"}
    assert key["cpu"] and key["torch"] == torch.__version__


def test_bf16_only_when_clearly_faster_and_as_good():
    faster = {"fp32": 100.0, "bf16": 160.0}
    chosen = precision.decide(faster, keeps_quality={"bf16": True})
    assert chosen.precision == "bf16" and chosen.reason == "bf16: 1.60x fp32 in the probe (160 vs 100 GFLOP/s)"
    below = precision.decide(faster, keeps_quality={"bf16": False})
    assert below.precision == "fp32" and "misses fp32's validation objective" in below.reason
    slower = precision.decide({"fp32": 160.0, "bf16": 100.0}, keeps_quality={"bf16": True})
    assert slower.precision == "fp32" and "0.62x" in slower.reason
    within_noise = precision.decide({"fp32": 100.0, "bf16": 110.0}, keeps_quality={"bf16": True}, margin=1.15)
    assert within_noise.precision == "fp32" and "below the 1.15x needed" in within_noise.reason


def test_auto_probes_on_cpu_and_an_explicit_precision_is_kept(home, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = build_tiny_model(build_tiny_processor(["a red player"]), seed=0)
    probe = CountingProbe(100.0, 200.0)
    explicit = precision.choose("fp32", model, home, probe)
    assert (explicit.precision, explicit.reason, probe.calls) == ("fp32", "fp32: set in the spec", 0)
    auto = precision.choose("auto", model, home, probe)
    assert auto == precision.decide({"fp32": 100.0, "bf16": 200.0}) and probe.calls == 1
    again = precision.choose("auto", model, home, probe)
    assert again.reason == auto.reason + " (cached)" and probe.calls == 1


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_a_gpu_keeps_the_static_rule_without_probing(home, monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    probe = CountingProbe(100.0, 200.0)
    chosen = precision.choose("auto", None, home, probe)
    assert chosen.precision == expected and "GPU Some GPU" in chosen.reason and probe.calls == 0
    assert precision.choose("fp16", None, home, probe).precision == "fp16", "an explicit choice is kept"


def test_the_shapes_are_the_models_own():
    model = build_tiny_model(build_tiny_processor(["a red player"]), seed=0)
    vision, text = model.config.vision_config, model.config.text_config
    assert precision.model_shapes(model) == [(precision.MAX_ROWS, vision.hidden_size, vision.intermediate_size),
                                             (precision.MAX_ROWS, text.hidden_size, text.intermediate_size)]


def test_the_real_probe_measures_both_precisions_and_leaves_the_random_stream_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    figures = precision.probe(SHAPES)
    assert torch.equal(torch.rand(3), expected), "a probed run draws the same numbers as an unprobed one"
    assert set(figures) == {"fp32", "bf16"} and all(math.isfinite(v) and v > 0 for v in figures.values())
