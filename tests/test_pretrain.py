"""The pretrained tiny model: keyed by its recipe, built once per home (or shared cache), atomic, and a better
start on the pitch set than random weights."""
import dataclasses
import re

import pytest
import torch

from blipexp import tracking
from blipexp.data import load_data
from blipexp.experiment.spec import TINY_RANDOM_MODEL, ExperimentSpec
from blipexp.model import pretrain
from blipexp.model.pretrain import CACHE_VARIABLE, RECIPE, Recipe
from blipexp.training.train import train_trial

pytestmark = pytest.mark.slow  # seconds or more a test (training, servers, child processes): not in the quick loop

SMALL_RECIPE = Recipe(images=16, steps=2, batch_size=8)  # the cache's behaviour, without the real build's cost


@pytest.fixture
def own_cache(monkeypatch):
    """The home's own cache (<home>/cache/pretrained), as users have it, and a count of builds."""
    monkeypatch.delenv(CACHE_VARIABLE, raising=False)
    builds = []
    real_build = pretrain.build

    def counted_build(recipe, echo):
        builds.append(recipe)
        return real_build(recipe, echo)

    monkeypatch.setattr(pretrain, "build", counted_build)
    return builds


def test_recipe_digest_is_deterministic_and_changes_with_every_field():
    assert Recipe().digest() == RECIPE.digest()
    changed = {Recipe(**{f.name: getattr(RECIPE, f.name) + 1}).digest() for f in dataclasses.fields(Recipe)}
    assert len(changed) == len(dataclasses.fields(Recipe)) and RECIPE.digest() not in changed


def test_built_once_under_the_home_then_loaded(home, own_cache):
    folder = pretrain.pretrained_tiny(home, SMALL_RECIPE, echo=False)
    assert folder == home / "cache" / "pretrained" / SMALL_RECIPE.digest()
    assert (folder / "recipe.json").is_file() and (folder / "model.safetensors").is_file()
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert pretrain.pretrained_tiny(home, SMALL_RECIPE, echo=False) == folder
    assert len(own_cache) == 1, "the second call loads the cached build"
    assert (folder / "model.safetensors").stat().st_mtime_ns == written


def test_a_changed_recipe_is_rebuilt_beside_the_old_build(home, own_cache):
    old = pretrain.pretrained_tiny(home, SMALL_RECIPE, echo=False)
    new = pretrain.pretrained_tiny(home, dataclasses.replace(SMALL_RECIPE, seed=1), echo=False)
    assert new != old and (new / "recipe.json").is_file() and (old / "recipe.json").is_file()
    assert len(own_cache) == 2


def test_the_same_recipe_gives_the_same_weights(tmp_path, own_cache):
    folders = [pretrain.pretrained_tiny(tmp_path / name, SMALL_RECIPE, echo=False) for name in ("a", "b")]
    a, b = (pretrain.BlipForConditionalGeneration.from_pretrained(f).state_dict() for f in folders)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_failed_build_leaves_no_folder_behind(home, monkeypatch):
    monkeypatch.delenv(CACHE_VARIABLE, raising=False)

    def failing_build(recipe, echo):
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(pretrain, "build", failing_build)
    with pytest.raises(RuntimeError, match="mid-build"):
        pretrain.pretrained_tiny(home, SMALL_RECIPE, echo=False)
    root = home / "cache" / "pretrained"
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []


def test_the_first_build_says_what_it_does_and_where(home, own_cache, capsys):
    """Outside a terminal (here: captured), a line when pretraining ends instead of a progress bar's redraws."""
    folder = pretrain.pretrained_tiny(home, SMALL_RECIPE)
    out = capsys.readouterr()
    assert "Pretraining the tiny BLIP once" in out.out and str(folder) in out.out
    assert re.search(r"^pretraining the tiny BLIP: 2/2 step in \d+\.\d s \(loss \d+\.\d{3}\)$", out.out, re.M), out.out
    assert "pretraining the tiny BLIP" not in out.err, "no bar"
    pretrain.pretrained_tiny(home, SMALL_RECIPE)
    assert capsys.readouterr().out == "", "silent once cached"


def test_the_shared_cache_variable_replaces_the_homes_cache(home, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "shared"))
    assert pretrain.cache_root(home) == tmp_path / "shared"
    monkeypatch.delenv(CACHE_VARIABLE)
    assert pretrain.cache_root(home) == home / "cache" / "pretrained"


@pytest.mark.slow
def test_the_pretrained_start_captions_the_pitch_before_training_and_learns_from_it(home):
    """Epoch 0 (untrained) CIDEr on the pitch set: the pretrained model's is well above random weights', and
    fine-tuning lifts it further."""
    tracking.configure(home)
    tracking.use_experiment("pretrained-start", home)
    spec = ExperimentSpec().tiny().replace(pitch_scenes=160, epochs=3, sample_captions=0)
    data = load_data(spec, home, progress=False)
    pretrained = train_trial(spec, data, home, echo=False)
    random = train_trial(spec.replace(model=TINY_RANDOM_MODEL, epochs=1), data, home, echo=False)
    assert pretrained.untrained["cider"] > 1.5 * random.untrained["cider"]  # measured: 0.38 against 0.19
    assert pretrained.objective > pretrained.untrained["cider"] + 0.2
