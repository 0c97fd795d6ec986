"""The model card: Hub front matter that parses, and the facts a reader needs, taken from the spec and the data."""
import collections

import yaml

from blipexp.data import CaptionData
from blipexp.experiment.search_space import FloatRange
from blipexp.experiment.spec import ExperimentSpec
from blipexp.registry import model_card
from blipexp.scoring.evidence import Interval
from blipexp.tracking.scores import LoggedScores

VALIDATION = LoggedScores("validation", {"cider": 1.25, "bleu4": 0.31, "loss": 0.8}, {"cider": Interval(1.0, 1.5)},
                          "bs:1000|seed:42|idf:split|images:8")
TEST = LoggedScores("test", {"cider": 1.1, "bleu4": 0.29, "loss": 0.85},
                    {"cider": Interval(0.9, 1.3), "bleu4": Interval(0.2, 0.35)}, "bs:1000|seed:42|idf:split|images:4")
NO_TEST = LoggedScores("test", {}, {}, "")
GENERATION = {"num_beams": 3, "max_new_tokens": 20}


def data(**changes) -> CaptionData:
    fields = dict(train=[object()] * 30, validation=[object()] * 8, test=[object()] * 4,
                  skipped=collections.Counter({"corrupt image": 2}), total=44, fingerprint="0123456789abcdef",
                  source="/photos/football", splits="random")
    return CaptionData(**{**fields, **changes})


class CardExperiment(ExperimentSpec):
    """Hypothesis: beams help."""

    num_beams = 3
    learning_rate = 1e-5


class CardSweep(CardExperiment):
    def search_space(self):
        return {"learning_rate": FloatRange(1e-6, 1e-4, log=True)}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_front_matter_is_a_hub_model_card_with_the_test_scores():
    spec = CardExperiment().replace(dataset="someone/photos")
    meta = front_matter(model_card.render(spec, data(), VALIDATION, TEST, GENERATION))
    assert meta["base_model"] == spec.model and meta["datasets"] == ["someone/photos"]
    assert meta["pipeline_tag"] == "image-to-text" and meta["library_name"] == "transformers"
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == "test"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"cider": 1.1, "bleu4": 0.29, "loss": 0.85}


def test_without_a_test_split_the_scores_are_the_validation_ones():
    meta = front_matter(model_card.render(CardExperiment(), data(test=[]), VALIDATION, NO_TEST, GENERATION))
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["split"] == "validation" and result["metrics"][0] == {
        "type": "cider", "name": "validation cider", "value": 1.25}


def test_the_body_names_data_settings_metrics_generation_and_how_to_load():
    spec = CardExperiment()
    card = model_card.render(spec, data(), VALIDATION, TEST, GENERATION, git_commit="abc1234")
    assert "beams help" in card  # the hypothesis
    assert "0123456789abcdef" in card and "30 train, 8 validation, 4 test" in card and "corrupt image: 2" in card
    assert "| cider | 1.2500 [1.0000, 1.5000] | 1.1000 [0.9000, 1.3000] |" in card
    assert "| bleu4 | 0.3100 | 0.2900 [0.2000, 0.3500] |" in card  # an interval where one was logged
    assert "- test: `bs:1000|seed:42|idf:split|images:4`" in card
    assert '"num_beams": 3' in card  # the generation config
    assert "| `learning_rate` | `1e-05` |" in card and "| `num_beams` | `3` |" in card  # the diff from defaults
    assert "| `epochs` |" not in card  # a default is not part of the diff
    assert 'mlflow.pyfunc.load_model("models:/blip-football@champion")' in card.replace(spec.registered_model,
                                                                                         "blip-football")
    assert "BlipForConditionalGeneration.from_pretrained" in card and "abc1234" in card


def test_the_reproduce_command_sets_what_differs_from_the_experiment_but_not_what_the_sweep_searched():
    spec = CardSweep().tiny().replace(learning_rate=3e-4, seed=7, prompt="a photo of")
    card = model_card.render(spec, data(), VALIDATION, TEST, GENERATION)
    line = next(line for line in card.splitlines() if line.startswith("Reproduce:"))
    assert "--tiny" in line and "--set seed=7" in line and "--set 'prompt=a photo of'" in line
    assert "learning_rate" not in line
    assert "a photo of" in card.split("## How to use")[1]  # the prompt is explained for transformers users


def test_a_tiny_model_names_no_hub_base_model():
    meta = front_matter(model_card.render(CardExperiment().tiny(), data(), VALIDATION, TEST, GENERATION))
    assert "base_model" not in meta


def test_local_folders_are_not_named_as_hub_models_or_datasets(tmp_path, monkeypatch):
    def meta(model: str, dataset: str = "pitch") -> dict:
        spec = CardExperiment().replace(model=model, dataset=dataset)
        return front_matter(model_card.render(spec, data(), VALIDATION, TEST, GENERATION))

    for model, dataset in ((str(tmp_path / "model"), str(tmp_path / "photos")), ("./blip", "../photos")):
        assert not {"base_model", "datasets"} & set(meta(model, dataset)), (model, dataset)
    (tmp_path / "owner" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # "owner/model" is a folder here: a local model, though it reads like a Hub id
    assert "base_model" not in meta("owner/model")
    assert meta("someone/else")["base_model"] == "someone/else"


def test_the_worst_test_captions_are_listed_with_their_references():
    worst = [("img/3.jpg", "a dog | a cat", ["two red players chase the ball"], 0.0),
             ("img/9.jpg", "", ["a player", "one player"], 0.125)]
    card = model_card.render(CardExperiment(), data(), VALIDATION, TEST, GENERATION, worst=worst)
    section = card.split("The worst test captions")[1]
    assert "| `img/3.jpg` | a dog \\| a cat | two red players chase the ball | 0.000 |" in section
    assert "| `img/9.jpg` | (empty) | a player / one player | 0.125 |" in section


def test_the_card_shows_the_environment_the_run_recorded_and_the_rerun_command():
    from blipexp.runtime import environment

    recorded = environment.current("bf16")
    card = model_card.render(CardExperiment(), data(), VALIDATION, TEST, GENERATION, git_commit="abc1234",
                             environment=recorded, run_id="f" * 32)
    section = card.split("## Environment")[1].split("## How to use")[0]
    for name, version in recorded["packages"].items():
        assert f"| {name} | {version or 'not installed'} |" in section
    assert f"Python {recorded['python']}" in section and "precision used `bf16`" in section
    assert f"`python -m blipexp rerun {'f' * 32}`" in card
    assert "## Environment" not in model_card.render(CardExperiment(), data(), VALIDATION, TEST, GENERATION)
