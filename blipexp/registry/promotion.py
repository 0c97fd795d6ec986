"""Promotion: an alias (`models:/<name>@champion`) moved to a version when the evidence lets it replace the holder
(`promotion_judge`: the two compared on the same test images, `promotion_refusal`: the rule) and the version loads.
MLflow 3 deprecates registry stages, so deployment targets are aliases."""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from ..runtime import locks
from ..scoring import evidence
from ..scoring.assess import EmptySplit, Incomparable, compare
from ..serving.captioner import example_image_base64
from .versions import find_model, find_version, version_target

PROMOTE_LOCK_TIMEOUT_S = 300  # loading a real BLIP for the check takes seconds to a minute
PROMOTE_ATTEMPTS = 5  # judgements against a holder that another promote replaced meanwhile


@dataclass(frozen=True)
class Judgement:
    """What a promotion's check found: a refusal (None: the candidate may take the alias), the report to print, and
    the tags recording the evidence on the candidate."""

    refusal: str | None
    report: str
    tags: dict[str, str]


# judge(candidate, holder): the evidence that the candidate may replace the holder (promotion_judge)
Judge = Callable[[ModelVersion, ModelVersion], Judgement]


def promote(name: str, version: str, alias: str = "champion", force: bool = False,
            judge: Judge | None = None, echo: Callable[[str], None] = print) -> str:
    """Point `alias` at `version` if the judge lets it replace the current holder (or `force`) and it loads;
    return a message. The judge's report is passed to `echo`; its evidence is tagged on the candidate.

    The comparison runs first (it may caption images: seconds to minutes); the alias is then read again and moved
    under a file lock, so two promotes at once act one after the other (on one machine). A holder changed meanwhile
    is never replaced on evidence about another: the candidate is judged again against the new one."""
    client = MlflowClient()
    find_model(client, name)  # a clear error for an unknown name
    version = str(version)
    candidate = find_version(client, name, version)
    for _ in range(PROMOTE_ATTEMPTS):
        holder = _alias_holder(client, name, alias)
        if holder is not None and holder == version:
            return f"{name}@{alias} already points to version {version}: nothing changed"
        judgement = judge(candidate, find_version(client, name, holder)) if judge and holder is not None else None
        if judgement is not None:
            echo(judgement.report)
            if judgement.refusal and not force:
                raise ValueError(f"{judgement.refusal}; nothing changed (--force promotes anyway)")
        with _promote_lock():
            if _alias_holder(client, name, alias) != holder:
                continue  # another promote moved it meanwhile: judge against the new holder
            _check_loads(name, version)
            client.set_registered_model_alias(name, alias, version)
            forced = bool(judgement and judgement.refusal)
            record = {**(judgement.tags if judgement else {}), **({"promote_forced": str(forced)} if judgement else {}),
                      "promoted_at": datetime.now(timezone.utc).isoformat(), f"previous_{alias}": holder or "none"}
            for key, value in record.items():
                client.set_model_version_tag(name, version, key, value)
        was = f"version {holder}" if holder is not None else "nothing"
        return f"{name}@{alias} -> version {version} (was {was}){' [forced]' if forced else ''}"
    raise ValueError(f"{name}@{alias} kept moving while version {version} was compared with its holder "
                     f"({PROMOTE_ATTEMPTS} times): run promote again")


def _alias_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    holder = (client.get_registered_model(name).aliases or {}).get(alias)
    return None if holder is None else str(holder)


def _promote_lock():
    """A lock per registry store: next to a sqlite database, else in the temp folder keyed by the store's URI.

    Its timeout is a ValueError naming the lock file (the OS frees the lock if its holder dies)."""
    uri = mlflow.get_registry_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///").split("?")[0] + ".promote.lock")
    else:
        key = hashlib.sha256(uri.encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"blipexp-promote-{key}.lock"
    return locks.file_lock(path, timeout=PROMOTE_LOCK_TIMEOUT_S)


def _check_loads(name: str, version: str) -> None:
    """ValueError unless the version loads and captions the example image: a file that merely opens is not enough."""
    uri = f"models:/{name}/{version}"
    fix = "its files are missing or damaged: register a fresh version instead"
    try:
        out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": [example_image_base64()]}),
                                                    params={"max_new_tokens": 4})
    except Exception as exc:  # any failure to download, load or generate means: not promotable
        raise ValueError(f"{uri} does not load ({type(exc).__name__}: {exc}); {fix}") from exc
    captions = list(out["caption"]) if "caption" in getattr(out, "columns", ()) else []
    if len(captions) != 1 or not isinstance(captions[0], str):
        raise ValueError(f"{uri} loads but does not caption the example image (it answered {str(out)[:200]!r}); "
                         f"{fix}")


REQUIRE = ("not-worse", "better")  # promote's rules: refuse a significantly worse candidate / anything not better


def promotion_judge(home: Path, require: str = "not-worse", alpha: float = evidence.ALPHA,
                    overrides: tuple[str, ...] = ()) -> Callable:
    """`promote`'s judge: the candidate against the alias's holder as `compare` does, on the candidate's
    test images (its data, or the set --set dataset= names), on the objective metric; see promotion_refusal. Two
    versions that cannot be compared (other data each, images one learnt from) are refused too, so --force can
    override every refusal."""
    if require not in REQUIRE:
        raise ValueError(f"--require {require!r}: use one of {', '.join(REQUIRE)}")
    evidence.check_alpha(alpha)

    def judge(candidate, holder) -> Judgement:
        new, held = (version_target(f"models:/{v.name}/{v.version}") for v in (candidate, holder))
        who = f"version {candidate.version} (B) against version {holder.version} (A)"
        always = {"promote_compared_with": str(holder.version), "promote_rule": f"{require}, alpha {alpha:g}"}
        try:
            try:
                comparison, note = compare(held, new, home, "test", overrides, data=new), ""
            except EmptySplit:  # a model trained without a test split: its validation images are all there is
                comparison = compare(held, new, home, "validation", overrides, data=new)
                note = ("\nnote: the data have no test split, so the versions were compared on the validation "
                        "images, which chose the candidate's epoch: its lead there is optimistic")
        except Incomparable as exc:
            return Judgement(str(exc), f"{who}: not compared", {**always, "promote_not_compared": str(exc)[:4000]})
        difference = comparison.differences[comparison.metric]
        evidence_tags = {"promote_metric": comparison.metric, "promote_difference": difference.difference,
                         "promote_ci_low": difference.ci_low, "promote_ci_high": difference.ci_high,
                         "promote_p_value": difference.p_value, "promote_images": difference.images,
                         "promote_split": comparison.a.scores.split,
                         "promote_data_fingerprint": comparison.a.fingerprint}
        tags = {**always, **{key: f"{value:.6g}" if isinstance(value, float) else str(value)
                           for key, value in evidence_tags.items() if value is not None}}  # none on too few images
        refusal = promotion_refusal(difference, require, alpha, str(candidate.version), str(holder.version))
        return Judgement(refusal, f"{who}\n{comparison.describe(alpha)}{note}", tags)

    return judge


def promotion_refusal(difference: evidence.Difference, require: str, alpha: float, candidate: str,
                      holder: str) -> str | None:
    """Why the candidate (B) may not replace the holder (A), or None. Both rules read the two-sided paired test at
    `alpha` that the printed verdict reads: "worse" is p < alpha with the candidate behind, "better" p < alpha with
    it ahead, so each is in effect a one-sided test at alpha / 2. Too few images for a test refuse only "better"."""
    if difference.significant(alpha) and difference.difference < 0:
        return f"version {candidate} is significantly worse than version {holder}"
    if require != "better" or (difference.significant(alpha) and difference.difference > 0):
        return None
    if not difference.tested:
        return (f"version {candidate} cannot be shown better than version {holder} (--require better): "
                f"{evidence.too_few(difference.images)}")
    return (f"version {candidate} is not significantly better than version {holder} (--require better: a two-sided "
            f"p < {alpha:g} with the candidate ahead; p = {difference.p_value:.3f})")
