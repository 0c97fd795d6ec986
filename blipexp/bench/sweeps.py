"""The tiny football_lr_sweep: blipexp with cache and pruning, without them, full fine-tuning, and HF
`Trainer.hyperparameter_search(backend="optuna")` on the same space, trial count and data, over several seeds."""
from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

from transformers.trainer_callback import PrinterCallback

from ..data.collator import CaptionCollator
from ..experiment.search_space import IntRange
from ..experiment.spec import ExperimentSpec
from ..model import generation
from .homes import new_home
from .sizes import Size, log

FAST = "blipexp: frozen encoder, feature cache, pruning"
FULL_FT = "blipexp: full fine-tuning, pruning"
HF = "HF Trainer.hyperparameter_search (optuna), full fine-tuning"
UNCACHED = "blipexp: frozen encoder, no cache, no pruning"


def bench_sweeps(size: Size, root: Path, model: str | None = None, probed: Path | None = None) -> dict:
    """Each way's wall time and best objective. The compared ways (FAST against HF, and against FULL_FT: the frozen
    encoder's cost in quality) run once per seed in size.sweep_seeds and report the means, with each seed's sweep
    under "seeds": the best of 8 trials moves by 0.1-0.4 CIDEr with the seed alone, as much as the differences
    measured. The uncached, unpruned way runs at the first seed only, and only on the preset.

    `model`: a pretrained folder every way starts from instead of the `--tiny` preset (pretrained.BASE_SHAPED's),
    searched over the preset's space. `probed`: a home each sweep's home starts from (homes.new_home)."""
    base = sweep_spec(size)
    if model:
        base = base.replace(model=model)  # no longer `is_tiny`: the pinned space keeps the preset's ranges
    ways = {
        FAST: lambda spec, home: blipexp_sweep(spec.replace(freeze_vision_encoder=True), home),
        UNCACHED: lambda spec, home: blipexp_sweep(
            spec.replace(freeze_vision_encoder=True, cache_vision_features=False, prune=False), home),
        FULL_FT: blipexp_sweep,
        HF: _hf_sweep,
    }
    if size.name == "quick":
        ways.pop(FULL_FT)
    if model or size.name == "quick":  # the uncached way runs FAST's code with two switches off: full size only
        ways.pop(UNCACHED)
    results = {}
    for way, sweep in ways.items():
        seeds = size.sweep_seeds if way in (FAST, FULL_FT, HF) else size.sweep_seeds[:1]
        runs = []
        for seed in seeds:
            home = new_home(root / f"sweep-{len(results)}-{seed}", probed)
            runs.append({"seed": seed, **sweep(base.replace(seed=seed), home)})
            log(f"sweep{' (base-shaped tiny)' if model else ''}: {way}, seed {seed}: "
                f"{runs[-1]['seconds']:.0f}s, best {base.objective_metric} {runs[-1]['best']:.3f}")
        results[way] = over_seeds(runs)
    return results


def sweep_spec(size: Size) -> ExperimentSpec:
    """The tiny football_lr_sweep at the benchmark's size, its search space pinned (the preset's ranges)."""
    from ..experiment import catalog

    base = catalog.load("football_lr_sweep", catalog.experiments_dir()).tiny()
    space = base.search_space()
    if size.name == "quick":  # one or two epochs a trial: the smoke check's budget
        space = {**space, "epochs": IntRange(1, 2)}
    base = _with_space(base, space).replace(n_trials=size.sweep_trials, pitch_scenes=size.sweep_scenes)
    return base.with_overrides(size.overrides)


def over_seeds(runs: list[dict]) -> dict:
    """One way's result: the first seed's sweep, with wall time, best objective (and its test objective and epochs
    trained, where measured) the means over all seeds, each with its standard error as `<key>_se` (how far the mean
    itself may be off: with 8 trials one sweep's best moves by a few tenths of CIDEr with the seed)."""
    result = {**runs[0], "seeds": runs}
    for key in ("seconds", "best", "test", "epochs"):
        if key in runs[0]:
            values = [r[key] for r in runs]
            result[key] = statistics.mean(values)
            result[f"{key}_se"] = standard_error(values)
    return result


def standard_error(values: list[float]) -> float | None:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None


def _with_space(spec: ExperimentSpec, space: dict) -> ExperimentSpec:
    """The spec with its search space pinned to `space`, whatever model it is later given."""
    variant = type(f"{type(spec).__name__}Pinned", (type(spec),), {"search_space": lambda self: space})
    variant.name = type(spec).name
    return variant(**spec.to_dict())


def blipexp_sweep(spec: ExperimentSpec, home: Path) -> dict:
    from optuna.trial import TrialState

    from .. import tracking
    from ..data import load_data
    from ..sweep import run_sweep

    tracking.configure(home)
    tracking.use_experiment(spec.experiment_name, home)
    data = load_data(spec, home)
    started = time.perf_counter()
    result = run_sweep(spec, data, home, echo=False)
    seconds = time.perf_counter() - started
    states = [t.state for t in result.study.trials]
    best = result.best_trial
    test = tracking.Run(best.user_attrs["mlflow_run_id"]).read().data.metrics if best else {}
    return {"seconds": seconds, "best": best.value if best else float("nan"),
            "test": test.get(f"test_{spec.objective_metric}", float("nan")),  # the chosen trial's, on the test split
            "epochs": sum(len(t.intermediate_values) for t in result.study.trials),  # trained, over all trials
            "best_params": best.params if best else {}, "trials": len(states),
            "pruned": states.count(TrialState.PRUNED)}


def _hf_sweep(spec: ExperimentSpec, home: Path) -> dict:
    """What a user of HF's own search would write: model_init, hp_space, the last evaluation as objective.

    It gets blipexp's dataset, collator and generation-only evaluation (Seq2SeqTrainer's own would feed the
    reference caption to generate()), and the same seeded TPE sampler. HF's study prunes with Optuna's default
    MedianPruner; there is no MLflow logging and no test evaluation, which only favours it. Its trials also run
    with the long-lived objects frozen for the garbage collector as blipexp's do (loop.long_lived_objects_frozen):
    this process holds MLflow's objects, which a plain HF script would not, and each train() starts with a full
    collection.
    """
    import optuna

    from ..data import load_data
    from ..data.features import PixelRows, evaluation_dataset, training_dataset
    from ..model import precision
    from ..model.modeling import load_model_and_processor
    from ..scoring.evaluation import compute_metrics_for
    from ..sweep.loop import long_lived_objects_frozen
    from ..training.trainer import CaptionTrainer, training_arguments

    data = load_data(spec, home)
    captions = [c for e in data.train for c in e.captions]
    _, processor = load_model_and_processor(spec, captions, home, echo=False)  # the model blipexp's trials start from
    # decoded on demand and kept after first use, as blipexp's own trials do with splits this small
    train_set = training_dataset(PixelRows(data, data.train, processor.image_processor, memo=True), data.train)
    val_set, val_refs = evaluation_dataset(PixelRows(data, data.validation, processor.image_processor, memo=True),
                                           data.validation)
    trains_in = spec.replace(precision=precision.used(spec, home))  # what blipexp's trials train in
    args = dataclasses.replace(training_arguments(trains_in, home / "hf", steps_per_epoch=1, echo=False),
                               save_strategy="no", load_best_model_at_end=False, eval_on_start=False,
                               logging_strategy="no")
    trainer = CaptionTrainer(
        model_init=lambda trial: load_model_and_processor(spec, captions, home, echo=False)[0], args=args,
        train_dataset=train_set, eval_dataset=val_set,
        data_collator=CaptionCollator(processor.tokenizer, processor.tokenizer.bos_token_id, spec.max_caption_tokens),
        compute_metrics=compute_metrics_for(processor.tokenizer, val_refs),
        generation_kwargs=generation.settings(spec))
    trainer.remove_callback(PrinterCallback)  # it prints every evaluation's dict
    space = spec.search_space()
    names = {"learning_rate": "learning_rate", "epochs": "num_train_epochs"}
    assert set(space) <= set(names), f"the HF comparison maps only {sorted(names)}"

    def hp_space(trial):
        from ..sweep import suggest

        return {names[key]: suggest(trial, key, dim) for key, dim in space.items()}

    started = time.perf_counter()
    with long_lived_objects_frozen():
        best = trainer.hyperparameter_search(
            hp_space=hp_space, compute_objective=lambda metrics: metrics[f"eval_{spec.objective_metric}"],
            n_trials=spec.n_trials, direction=spec.direction, backend="optuna",
            sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=4))
    return {"seconds": time.perf_counter() - started, "best": best.objective, "best_params": best.hyperparameters,
            "trials": spec.n_trials}
