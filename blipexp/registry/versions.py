"""Registered versions: listed with their tags and aliases (`models`), looked up by name, run, tag or number, and
named as a model to score (`version_target`)."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ..scoring.assess import Target
from ..serving.use import hf_folder
from ..tracking.evaluations import learnt_images, logged_spec


def list_models(name: str | None = None) -> list[dict[str, Any]]:
    """Registered versions (of one model, or all) with tags and aliases, newest first."""
    client = MlflowClient()
    models = [find_model(client, name)] if name else list(client.search_registered_models())
    rows = []
    for model in models:
        aliases_of: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases_of.setdefault(str(version), []).append(alias)
        for version in versions_of(client, model.name):
            rows.append({
                "name": model.name,
                "version": str(version.version),
                "aliases": sorted(aliases_of.get(str(version.version), [])),
                "objective": version.tags.get("objective"),
                "run_id": version.run_id,
                "created": _iso(version.creation_timestamp),
                "created_ms": version.creation_timestamp,
                "tags": dict(version.tags),
                "description": version.description or "",
            })
    rows.sort(key=lambda r: (r["created_ms"] or 0, r["name"], int(r["version"])), reverse=True)
    return rows


def format_models(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of list_models() rows."""
    if not rows:
        return "no registered models: register one with log_and_register (or `blipexp run`)"
    header = ("name", "version", "aliases", "objective (val)", "test [95% interval]", "created (UTC)", "run_id")
    lines = [(r["name"], r["version"], ",".join(r["aliases"]) or "-", _short(r["objective"]),
              _test_objective(r["tags"]), r["created"][:19], r["run_id"] or "-") for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])


def _test_objective(tags: dict[str, str]) -> str:
    """The objective metric on the test split with its interval, as the version was tagged when registered."""
    key = tags.get("objective_metric", "")
    value = tags.get(f"test_{key}")
    if value is None:
        return "-"
    low, high = tags.get(f"test_{key}_ci_low"), tags.get(f"test_{key}_ci_high")
    return _short(value) + (f" [{_short(low)}, {_short(high)}]" if low and high else "")


def _short(value: str | None) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4f}"
    except ValueError:
        return value


def _iso(timestamp_ms: int | None) -> str:
    if not timestamp_ms:
        return ""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


def find_model(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise ValueError(f"registered model {name!r} not found; known: {', '.join(known) or 'none'}") from None


def versions_of(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of registered model `name`.

    MLflow's filter strings have no escapes (a value is whatever lies between its quotes, a backslash included),
    so the name goes between the quote character it does not hold."""
    quote = '"' if "'" in name else "'"
    if quote in name:
        raise ValueError(f"registered model name {name!r} holds both ' and \": MLflow cannot search for it; "
                         "register under a name without one of them (registered_model in the spec)")
    return list(client.search_model_versions(f"name={quote}{name}{quote}"))


def version_tagged(name: str, tag: str, value: str) -> ModelVersion | None:
    """The version of registered model `name` whose tag `tag` is `value` (e.g. the one a sweep registered), or None,
    also when no model of that name exists yet."""
    return next((v for v in _versions_if_any(name) if v.tags.get(tag) == value), None)


def version_of_run(name: str, run_id: str) -> ModelVersion | None:
    """The version of registered model `name` logged by run `run_id`, or None."""
    return next((v for v in _versions_if_any(name) if v.run_id == run_id), None)


def _versions_if_any(name: str) -> list[ModelVersion]:
    """Every version of registered model `name`; none when no model of that name exists yet."""
    try:
        return versions_of(MlflowClient(), name)
    except MlflowException:
        return []


def tags_of(version: ModelVersion) -> dict[str, str]:
    """A registered version's tags as the registry holds them now (another worker may have set some since)."""
    return dict(MlflowClient().get_model_version(version.name, version.version).tags)


def tag_version(version: ModelVersion, tags: dict[str, str]) -> None:
    """Set tags on a registered version, in order (a marker tag set last says the others are there)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)


def find_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, version)
    except MlflowException:
        known = sorted((int(v.version) for v in versions_of(client, name)))
        raise ValueError(f"{name} has no version {version!r}; known versions: "
                         f"{', '.join(map(str, known)) or 'none'}") from None


def version_target(uri: str) -> Target:
    """The registered version `uri` names (models:/NAME/VERSION or models:/NAME@ALIAS), with the spec its run logged
    and the images its data manifest lists."""
    client = MlflowClient()
    body = uri[len("models:/"):]
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = body.rpartition("/")
            version = client.get_model_version(name, number)
    except (MlflowException, ValueError) as exc:
        raise ValueError(f"no registered version {uri}: `python -m blipexp models` lists them") from exc
    pinned = f"models:/{version.name}/{version.version}"
    return Target(uri if uri == pinned else f"{uri} (version {version.version})", logged_spec(version.run_id),
                  version.tags.get("data_fingerprint"), lambda scratch: _download(pinned, scratch),
                  weights=version.tags.get("weights_digest"), run_id=version.run_id, version=version,
                  learnt=lambda: learnt_images(version.run_id))


def _download(uri: str, scratch: Path) -> Path:
    return hf_folder(uri, scratch)
