"""evaluate, compare and the evidence-gated promote, on real registered tiny models: a 1-epoch model trained with the
vision encoder frozen and its features cached (its final scores must still be the served model's), and a fuller
6-epoch one, registered as versions 1 and 2 of one model."""
from __future__ import annotations

import json
import re

import mlflow
import pytest

from blipexp import cli, registry, tracking
from blipexp.cli import judge
from blipexp.cli import run as runner
from blipexp.data import PITCH_SEED, load_data, write_pitch_dataset
from blipexp.experiment.spec import ExperimentSpec
from blipexp.registry import promotion
from blipexp.scoring import assess, eval_cache, evidence
from blipexp.tracking import evaluations
from blipexp.training.train import train_trial

pytestmark = pytest.mark.slow
NAME = "assess-tiny"


class AssessExperiment(ExperimentSpec):
    """Hypothesis: more epochs caption better."""


@pytest.fixture(scope="module")
def versions(new_home):
    home = new_home()
    AssessExperiment.name = "assess_experiment"
    base = AssessExperiment().tiny().replace(pitch_scenes=300, sample_captions=0, registered_model=NAME)
    tracking.configure(home)
    tracking.use_experiment(base.experiment_name, home)
    data = load_data(base, home, progress=False)
    made = {}
    for label, spec in (("short", base.replace(epochs=1, freeze_vision_encoder=True)), ("long", base.replace(epochs=6))):
        result = train_trial(spec, data, home, echo=False)
        made[label] = (result, runner.register_trial_model(spec, data, result.model_dir, result.run_id, {}))
    return home, data, made


def uri(version) -> str:
    return f"models:/{version.name}/{version.version}"


def run_cli(home, *argv) -> int:
    return cli.main([*argv, "--home", str(home)])


def test_the_logged_test_scores_are_the_served_models_even_from_cached_half_precision_features(versions):
    home, data, made = versions
    result, version = made["short"]
    assert mlflow.get_run(result.run_id).data.params["vision_cache_train"] == "computed", "trained on cached features"
    scored = assess.evaluate(judge.resolve(uri(version), home), home, "test", use_cache=False, echo=False)
    logged = mlflow.get_run(result.run_id).data.metrics
    assert not scored.cached and len(scored.scores.keys) == len(data.test)
    for key, value in scored.scores.metrics.items():  # captioned again by the downloaded, registered model
        assert logged[f"test_{key}"] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_an_evaluation_is_read_from_the_cache_the_second_time(versions):
    home, _, made = versions
    target = judge.resolve(uri(made["long"][1]), home)
    first = assess.evaluate(target, home, "validation", echo=False)
    again = assess.evaluate(judge.resolve(uri(made["long"][1]), home), home, "validation", echo=False)
    assert first.cached and again.cached, "training left the validation and test scores in the cache"
    assert again.scores.metrics == first.scores.metrics and again.intervals == first.intervals
    folder = home / "cache" / "evaluations"
    before = set(folder.glob("*.json"))
    beams = assess.evaluate(target, home, "validation", ("num_beams=2",), echo=False)
    assert not beams.cached, "other generation settings are another evaluation"
    (entry,) = set(folder.glob("*.json")) - before  # stored as an entry of its own, the others kept
    assert eval_cache.read(home, entry.stem) == json.loads(json.dumps(beams.scores.to_json()))
    beams_again = assess.evaluate(target, home, "validation", ("num_beams=2",), echo=False)
    assert beams_again.cached and beams_again.scores.metrics == beams.scores.metrics
    assert set(folder.glob("*.json")) - before == {entry}, "read back, not stored again"


def test_evaluate_prints_intervals_logs_a_run_linked_to_the_version_and_prints_json(versions, capsys):
    home, _, made = versions
    version = made["long"][1]
    assert run_cli(home, "evaluate", uri(version), "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 30 and printed["split"] == "test" and printed["cached"] is True
    cider = printed["metrics"]["cider"]
    assert cider["ci_low"] <= cider["value"] <= cider["ci_high"]
    assert printed["signature"] == "bs:1000|seed:42|idf:corpus|images:30"
    run = mlflow.get_run(printed["run_id"])
    assert run.data.tags["evaluated_version"] == f"{NAME}/{version.version}"
    assert run.data.metrics["test_cider"] == cider["value"]
    assert [m.model_id for m in run.inputs.model_inputs] == [evaluations.logged_model_id(version)] != [None]
    table = tracking.Run(run.info.run_id).table_columns("per_image/test.json")
    assert len(table["cider"]) == len(table["key"]) == 30 and {cell["type"] for cell in table["image"]} == {"image"}

    assert run_cli(home, "evaluate", uri(version)) == 0
    out = capsys.readouterr().out
    assert f"cider {cider['value']:.4f} [" in out and "(bs:1000|seed:42|idf:corpus|images:30)" in out
    assert "worst captions by cider:" in out


def test_compare_finds_the_one_epoch_model_significantly_worse(versions, capsys):
    home, _, made = versions
    short, long = (uri(made[label][1]) for label in ("short", "long"))
    assert run_cli(home, "compare", short, long, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 30
    cider = printed["metrics"]["cider"]
    assert set(cider) == {"a", "b", "difference", "ci_low", "ci_high", "p_value"}
    assert cider["difference"] == pytest.approx(cider["b"] - cider["a"]) and cider["difference"] > 0
    assert cider["ci_low"] > 0 and cider["p_value"] < 0.05
    assert printed["verdict"].startswith("B is better than A on cider by") and printed["verdict_metric"] == "cider"

    assert run_cli(home, "compare", long, short) == 0
    out = capsys.readouterr().out
    assert "A is better than B on cider by" in out and "p = " in out and "(30 images)" in out
    assert "  cider (verdict)  " in out and "  bleu4  " in out, "the metric whose p decides is marked"
    assert "p: each metric's own, uncorrected for testing 7 metrics; only cider's decides the verdict" in out


def test_compare_logs_the_side_by_side_table_in_bs_experiment_and_writes_it_as_one_page(versions, tmp_path, capsys):
    home, data, made = versions
    short, long = (made[label][1] for label in ("short", "long"))
    page = tmp_path / "pages" / "compare.html"
    assert run_cli(home, "compare", uri(short), uri(long), "--json", "--html", str(page)) == 0
    printed = json.loads(capsys.readouterr().out)
    run = mlflow.get_run(printed["run_id"])
    assert printed["html"] == str(page) and mlflow.get_experiment(run.info.experiment_id).name == "assess_experiment"
    assert run.data.tags["blipexp.role"] == "comparison" and run.data.tags["compared_a"] == uri(short)
    assert run.data.tags["evaluated_version"] == f"{NAME}/{long.version}"
    assert run.info.run_name == f"compare-test · {run.info.run_id[:6]}", "the role and the run's short id"
    cider = printed["metrics"]["cider"]
    assert run.data.metrics["test_cider_difference"] == pytest.approx(cider["difference"])
    assert run.data.metrics["test_cider_p_value"] == cider["p_value"]
    table = tracking.Run(run.info.run_id).table_columns("compare/test.json")
    assert list(table) == ["key", "image", "references", "caption_a", "caption_b", "cider_a", "cider_b", "difference"]
    assert sorted(table["key"]) == sorted(e.key for e in data.test) and {c["type"] for c in table["image"]} == {"image"}
    assert table["difference"] == sorted(table["difference"]), "B's worst losses first"
    assert table["difference"] == pytest.approx([b - a for a, b in zip(table["cider_a"], table["cider_b"])])
    assert sum(table["difference"]) / 30 == pytest.approx(cider["difference"])
    logged = {split: tracking.Run(made[label][0].run_id).table_columns("per_image/test.json")
              for split, label in (("a", "short"), ("b", "long"))}
    for side in ("a", "b"):
        captions = dict(zip(logged[side]["key"], logged[side]["prediction"]))
        assert table[f"caption_{side}"] == [captions[key] for key in table["key"]], "each model's own caption"

    text = page.read_text()
    thumbnails = re.findall(r'<img src="data:image/jpeg;base64,[A-Za-z0-9+/=]+" alt="([^"]+)">', text)
    assert thumbnails == table["key"], "the same rows, each with its picture inline"
    assert not re.search(r'(src|href)="(?!data:)', text), "nothing outside the page"
    assert printed["verdict"] in text

    assert run_cli(home, "compare", uri(long), uri(short)) == 0
    assert re.search(r"\n  run         [0-9a-f]{32}\n", capsys.readouterr().out + "\n")


def test_versions_trained_on_other_data_are_compared_only_on_a_named_set(versions, tmp_path, capsys):
    home, data, made = versions
    result, _ = made["long"]
    other = AssessExperiment().tiny().replace(pitch_scenes=200, registered_model=NAME)
    moved = runner.register_trial_model(other, load_data(other, home, progress=False), result.model_dir,
                                        result.run_id, {})
    assert run_cli(home, "compare", uri(made["short"][1]), uri(moved)) == 2
    err = capsys.readouterr().err
    assert data.fingerprint in err and moved.tags["data_fingerprint"] in err and "--set dataset=" in err
    assert run_cli(home, "promote", NAME, "--version", str(moved.version), "--alias", "other-data") == 0  # no holder yet
    assert run_cli(home, "promote", NAME, "--version", str(made["short"][1].version), "--alias", "other-data") == 2
    err = capsys.readouterr().err
    assert "--set dataset=" in err and "nothing changed (--force promotes anyway)" in err
    assert registry.list_models(NAME)  # still readable
    client = mlflow.MlflowClient()
    assert str(client.get_registered_model(NAME).aliases["other-data"]) == str(moved.version), "nothing changed"
    assert run_cli(home, "promote", NAME, "--version", str(made["short"][1].version), "--alias", "other-data",
                   "--force") == 0, "a refusal to compare is a refusal --force overrides"
    tags = client.get_model_version(NAME, made["short"][1].version).tags
    assert tags["promote_forced"] == "True" and data.fingerprint in tags["promote_not_compared"]
    assert str(client.get_registered_model(NAME).aliases["other-data"]) == str(made["short"][1].version)


def test_a_named_set_must_hold_none_of_either_models_training_images(versions, tmp_path, capsys):
    home, _, made = versions
    short, long = made["short"][1], made["long"][1]
    seen = write_pitch_dataset(tmp_path, 40, seed=PITCH_SEED)  # the first 40 of the scenes both trained on
    assert run_cli(home, "compare", uri(short), uri(long), "--set", f"dataset={seen}") == 2
    err = capsys.readouterr().err
    assert re.search(rf"\d+ of the 4 test images of .+ are images {re.escape(uri(short))} was trained or "
                     r"selected on \(images/000\d\d\.png", err), err
    assert run_cli(home, "promote", NAME, "--version", str(short.version), "--alias", "named") == 0  # no holder
    named = ("--alias", "named", "--set", f"dataset={seen}")
    assert run_cli(home, "promote", NAME, "--version", str(long.version), *named) == 2
    assert "was trained or selected on" in capsys.readouterr().err
    assert run_cli(home, "promote", NAME, "--version", str(long.version), *named, "--force") == 0
    assert mlflow.MlflowClient().get_model_version(NAME, long.version).tags["promote_forced"] == "True"


def test_too_few_images_get_no_interval_no_test_and_no_promotion_that_requires_better(versions, tmp_path, capsys):
    home, _, made = versions
    short, long = made["short"][1], made["long"][1]
    unseen = ("--set", f"dataset={write_pitch_dataset(tmp_path, 40, seed=PITCH_SEED + 1)}")  # 4 test images
    assert run_cli(home, "evaluate", uri(long), *unseen, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 4 and set(printed["metrics"]["cider"]) == {"value"}
    assert not any("_ci_" in key for key in mlflow.get_run(printed["run_id"]).data.metrics), "none logged"
    assert run_cli(home, "evaluate", uri(long), *unseen) == 0
    assert "\n  too few images for an interval (n=4, fewer than 10)\n" in capsys.readouterr().out

    assert run_cli(home, "compare", uri(short), uri(long), *unseen, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"]["cider"]["ci_low"] is None and printed["metrics"]["cider"]["p_value"] is None
    assert printed["verdict"].startswith("too few images for an interval (n=4, fewer than 10): B - A on cider is ")

    assert run_cli(home, "promote", NAME, "--version", str(short.version), "--alias", "few") == 0  # no holder
    assert run_cli(home, "promote", NAME, "--version", str(long.version), "--alias", "few", "--require", "better",
                   *unseen) == 2
    assert (f"cannot be shown better than version {short.version} (--require better): too few images for an "
            "interval (n=4, fewer than 10); nothing changed") in capsys.readouterr().err
    judgement = promotion.promotion_judge(home, "not-worse", overrides=unseen[1:])(long, short)
    assert judgement.refusal is None, "not-worse: nothing was shown worse"
    assert "too few images for an interval (n=4" in judgement.report
    assert judgement.tags["promote_images"] == "4" and not {"promote_p_value", "promote_ci_low"} & set(judgement.tags)


def test_require_better_reads_the_two_sided_test_at_alpha():
    def judged(difference: float, p: float | None, require: str, alpha: float = 0.05) -> str | None:
        low, high = (None, None) if p is None else (difference - 0.1, difference + 0.1)
        found = evidence.Difference("cider", 4.0, 4.0 + difference, low, high, p, 30 if p is not None else 4)
        return promotion.promotion_refusal(found, require, alpha, "2", "1")

    assert judged(+0.3, 0.04, "better") is None
    assert judged(+0.3, 0.07, "better") == ("version 2 is not significantly better than version 1 (--require better: "
                                            "a two-sided p < 0.05 with the candidate ahead; p = 0.070)"), \
        "p = 0.07 two-sided is 0.035 one-sided: still refused, as the printed verdict says no significant difference"
    assert judged(+0.3, 0.07, "better", alpha=0.1) is None
    assert judged(-0.3, 0.04, "better") == judged(-0.3, 0.04, "not-worse") == \
        "version 2 is significantly worse than version 1"
    assert judged(-0.3, 0.07, "not-worse") is None and judged(+0.3, 0.07, "not-worse") is None
    assert judged(+0.3, None, "not-worse") is None
    assert judged(+0.3, None, "better").endswith("too few images for an interval (n=4, fewer than 10)")


def test_promote_moves_the_alias_on_evidence_from_the_test_images(versions, capsys):
    home, _, made = versions
    short, long = made["short"][1], made["long"][1]
    client = mlflow.MlflowClient()
    assert run_cli(home, "promote", NAME, "--version", str(short.version)) == 0  # nothing to compare with
    assert run_cli(home, "promote", NAME, "--version", str(long.version), "--require", "better") == 0
    out = capsys.readouterr().out
    assert "B is better than A on cider" in out and f"-> version {long.version} (was version {short.version})" in out
    tags = client.get_model_version(NAME, long.version).tags
    assert tags["promote_compared_with"] == str(short.version) and tags["promote_forced"] == "False"
    assert float(tags["promote_p_value"]) < 0.05 and float(tags["promote_ci_low"]) > 0
    assert tags["promote_images"] == "30" and tags["promote_split"] == "test"
    assert tags["promote_data_fingerprint"] == long.tags["data_fingerprint"]
    compared = mlflow.get_run(tags["promote_comparison_run"])  # the run compare makes, the table with it
    assert compared.data.tags["evaluated_version"] == f"{NAME}/{long.version}"
    assert f"  run         {compared.info.run_id}" in out, "the report names it"
    assert len(tracking.Run(compared.info.run_id).table_columns("compare/test.json")["image"]) == 30

    assert run_cli(home, "promote", NAME, "--version", str(short.version)) == 2, "significantly worse: refused"
    assert "significantly worse" in capsys.readouterr().err
    assert str(client.get_registered_model(NAME).aliases["champion"]) == str(long.version)
    assert run_cli(home, "promote", NAME, "--version", str(short.version), "--force") == 0
    assert client.get_model_version(NAME, short.version).tags["promote_forced"] == "True"


def test_a_noise_level_candidate_is_refused_only_when_a_gain_is_required(versions, capsys):
    home, data, made = versions
    result, long = made["long"]
    spec = AssessExperiment().tiny().replace(pitch_scenes=300, epochs=6, registered_model=NAME)
    same = runner.register_trial_model(spec, data, result.model_dir, result.run_id, {})  # the same weights again
    assert run_cli(home, "promote", NAME, "--version", str(long.version), "--alias", "noise", "--force") == 0
    assert run_cli(home, "promote", NAME, "--version", str(same.version), "--alias", "noise", "--require", "better") == 2
    assert "not significantly better" in capsys.readouterr().err
    assert run_cli(home, "promote", NAME, "--version", str(same.version), "--alias", "noise") == 0
    assert "no significant difference on cider: +0 [+0, +0], p = 1.000 (30 images)" in capsys.readouterr().out


def test_models_lists_the_test_objective_with_its_interval(versions):
    home, _, made = versions
    tracking.configure(home)
    version = made["long"][1]
    listed = registry.format_models(registry.list_models(NAME))
    tags = version.tags
    assert f"{float(tags['test_cider']):.4f} [{float(tags['test_cider_ci_low']):.4f}, " \
           f"{float(tags['test_cider_ci_high']):.4f}]" in listed
    assert version.tags["precision"] == mlflow.get_run(version.run_id).data.params[
        "precision_used"] != "auto", "a version names the precision it trained in, not precision=auto"


def test_a_folder_needs_an_experiment_and_a_bad_name_is_explained(versions, tmp_path):
    home, _, made = versions
    with pytest.raises(ValueError, match="--experiment NAME"):
        judge.resolve(str(made["long"][0].model_dir), home)
    with pytest.raises(ValueError, match="names no model"):
        judge.resolve("no-such-thing", home)
    with pytest.raises(ValueError, match="no registered version models:/assess-tiny/99"):
        judge.resolve(f"models:/{NAME}/99", home)
    digest = eval_cache.weights_digest(made["long"][0].model_dir)
    assert digest == made["long"][1].tags["weights_digest"]
