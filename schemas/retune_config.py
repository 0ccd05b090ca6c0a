"""Retune actions: what a route's `retune: <name>` starts when an incident is sustained.

Each action carries its guard — which detectors, how many consecutive alerting windows, a
cooldown per model, `dry_run` — so a one-window blip never starts a tuning job and a
flapping model does not start ten. Kinds:

- `pubsub`: publish a `RetuneRequest` JSON to a topic (the decoupled default; a pipeline
  trigger — Eventarc, Cloud Functions, a Kubeflow sensor — consumes it);
- `vertex_pipeline`: submit a Vertex AI `PipelineJob` from a compiled template;
- `kfp`: create a run on a Kubeflow Pipelines endpoint from a compiled package.

`parameter_values` / `parameters` are rendered from the request: a string value may use
`{model}`, `{model_version}`, `{detector}`, `{condition}`, `{dataset_uri}`,
`{evaluation_data_uri}`, `{window_start}`, `{window_end}`, `{reason}` (the page's one-line
why), `{dedup_key}`, `{request_id}` (the same at every attempt of one incident's request: a
pipeline can name its outputs by it), and for `vertex_pipeline` also `{project}`,
`{location}` (window times are UTC, `20260105T063000Z`).
The dataset export (`RetuneExport`) runs first when configured, and its URIs are passed on.
"""

from __future__ import annotations

import difflib
import string
from datetime import timedelta
from fnmatch import fnmatchcase
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schemas.alert_types import PositiveDuration, ReceiverName, SecretRef

RENDER_FIELDS = frozenset(
    {
        "model",
        "model_version",
        "detector",
        "condition",
        "dataset_uri",
        "evaluation_data_uri",
        "window_start",
        "window_end",
        "reason",
        "dedup_key",
        "request_id",
        "project",
        "location",
    }
)


#: what a `kfp` action's strings may use: it has no project or location to fill in (a
#: `{project}` there passed `config check` and failed the run with a KeyError)
KFP_FIELDS = RENDER_FIELDS - {"project", "location"}
#: what the export's `uri` may use
EXPORT_URI_FIELDS = frozenset({"model", "window_start", "window_end"})


def check_template(value: Any, fields: frozenset[str] = RENDER_FIELDS) -> Any:
    """A string rendered with `str.format_map` at the moment an incident is sustained: a field
    it does not know (`{dataset}`), or a literal brace (`'{"epochs": 3}'`), passed
    `config check` and then failed there, using up the incident's retune. Checked at load."""
    if not isinstance(value, str):
        return value
    try:
        used = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as error:
        msg = f"{value!r}: {error} (write a literal brace as {{{{ or }}}})"
        raise ValueError(msg) from None
    for name in used:
        root = name.split(".")[0].split("[")[0]
        if root not in fields:
            known = ", ".join("{" + f + "}" for f in sorted(fields))
            msg = (
                f"{value!r} uses {{{name}}}, which is not filled in; known: {known} "
                "(write a literal brace as {{ or }})"
            )
            raise ValueError(msg)
    return value


def _check_templates(values: dict[str, Any], fields: frozenset[str] = RENDER_FIELDS) -> Any:
    for value in values.values():
        check_template(value, fields)
    return values


_ActionTemplate = Annotated[str, BeforeValidator(check_template)]
_TemplateValues = Annotated[dict[str, Any], BeforeValidator(_check_templates)]
_KfpTemplate = Annotated[str, BeforeValidator(partial(check_template, fields=KFP_FIELDS))]
_KfpTemplateValues = Annotated[
    dict[str, Any], BeforeValidator(partial(_check_templates, fields=KFP_FIELDS))
]


def known_detectors() -> list[str]:
    """The detector names Lookout has, as `detectors.enabled` knows them. Imported when an
    action is validated, not at import: `schemas.config` imports this module (through
    `schemas.alert_config`)."""
    from schemas.config import DetectorsConfig

    return [name for name in DetectorsConfig.model_fields if name != "enabled"]


def check_detector_patterns(patterns: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """`detectors: [saftey]` passed `config check` and then matched no detection ever: the
    action never ran and nothing said why. A name (or `*` pattern) must match a detector
    Lookout has; a misspelt one is refused at load, with the likely one named."""
    if patterns is None:
        return None
    known = known_detectors()
    for pattern in patterns:
        if any(fnmatchcase(name, pattern) for name in known):
            continue
        close = difflib.get_close_matches(pattern, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        msg = f"{pattern!r} names no detector Lookout has{hint}; known: {', '.join(known)}"
        raise ValueError(msg)
    return patterns


class _ActionBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ReceiverName
    #: detector name patterns this action is for (None: any detector a route sends it)
    detectors: tuple[str, ...] | None = None
    #: windows in a row at the incident's level before it counts as sustained
    #: (`alerts.state.at_incident_level`): an incident is held alerting until its return is
    #: proven (CUSUM), and a held window back under the threshold starts the count again, so
    #: a blip held open at the baseline's rate never reaches it
    consecutive_windows: int = Field(default=5, ge=1)
    #: at most one request per model per cooldown (event time), whatever the incident; a
    #: cooldown of zero or less would let a flapping model start a tuning job every window
    cooldown: PositiveDuration = timedelta(hours=24)
    #: export and render, log and count what would be sent, send nothing
    dry_run: bool = False
    #: how long the action may take to be answered: each call to Pub/Sub, Vertex AI or the
    #: Kubeflow endpoint, and the action as a whole. A hung endpoint held the worker, and a
    #: shutdown, for minutes, and the request counted as made although it never was
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_detector_patterns(value)


class PubSubRetune(_ActionBase):
    kind: Literal["pubsub"]
    project: str = Field(min_length=1)
    topic: str = Field(min_length=1)


class VertexPipelineRetune(_ActionBase):
    """`template_path`: a compiled pipeline (local YAML/JSON, `gs://` or an Artifact Registry
    `https://<region>-kfp.pkg.dev/...` URL such as the published `tune-large-model` template)."""

    kind: Literal["vertex_pipeline"]
    project: str = Field(min_length=1)
    location: str = "us-central1"
    template_path: str = Field(min_length=1)
    pipeline_root: str = Field(min_length=1)
    display_name: _ActionTemplate = "lookout-retune-{model}"
    parameter_values: _TemplateValues = Field(default_factory=dict)
    enable_caching: bool | None = None
    service_account: str | None = None
    #: a regional endpoint override (`http://127.0.0.1:PORT` in tests); None: the default
    api_endpoint: str | None = None


class KfpRetune(_ActionBase):
    kind: Literal["kfp"]
    host: str = Field(pattern=r"^https?://")
    package_path: str = Field(min_length=1)
    run_name: _KfpTemplate = "lookout-retune-{model}"
    experiment_id: str | None = None
    namespace: str | None = None
    parameters: _KfpTemplateValues = Field(default_factory=dict)
    #: a bearer token for the endpoint (`{env: NAME}` or `{file: PATH}`, read at each request
    #: so a rotated token is picked up; never logged): with `host` set, the client sends no
    #: in-cluster credentials of its own, and an authenticated endpoint answered 401/403
    existing_token: SecretRef | None = None


RetuneAction = Annotated[
    PubSubRetune | VertexPipelineRetune | KfpRetune, Field(discriminator="kind")
]


def _not_blank(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        msg = "must not be blank"
        raise ValueError(msg)
    return value


class RetuneExport(BaseModel):
    """The tuning dataset: `query` (DuckDB SQL; `$model`, `$start`, `$end` are bound) returns
    `prompt` and `response` columns (and optionally `request_id`); each row becomes
    `{"input_text": template with {prompt}, "output_text": response}`. Rows are shuffled with
    `seed` and `eval_fraction` of them go to `eval.jsonl`, the rest to `train.jsonl`, under
    `uri` (a local directory; `{model}`, `{window_start}`, `{window_end}` are filled in)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: Annotated[str, BeforeValidator(_not_blank)]
    uri: Annotated[
        str,
        BeforeValidator(partial(check_template, fields=EXPORT_URI_FIELDS)),
        BeforeValidator(_not_blank),
    ]
    instruction_template: str = "{prompt}"
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 42
    max_rows: int = Field(default=100_000, ge=1)

    @field_validator("instruction_template")
    @classmethod
    def _template_has_the_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            msg = "instruction_template must contain {prompt}"
            raise ValueError(msg)
        return value


#: the fields only an export fills in: without one they render as empty strings
EXPORTED_FIELDS = frozenset({"dataset_uri", "evaluation_data_uri"})


def template_fields(value: Any) -> set[str]:
    """The `{field}` names a (checked) template string uses."""
    if not isinstance(value, str):
        return set()
    return {
        name.split(".")[0].split("[")[0]
        for _, name, _, _ in string.Formatter().parse(value)
        if name is not None
    }


class RetuneConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    actions: tuple[RetuneAction, ...] = ()
    export: RetuneExport | None = None

    @model_validator(mode="after")
    def _exported_fields_need_an_export(self) -> RetuneConfig:
        """A pipeline parameter of `{dataset_uri}` with no `export` was sent as an empty
        string: the tuning run failed, or trained on nothing, far from the config."""
        if self.export is not None:
            return self
        for action in self.actions:
            values = dict(
                getattr(action, "parameter_values", None) or getattr(action, "parameters", {})
            )
            for name in ("display_name", "run_name"):
                if isinstance(getattr(action, name, None), str):
                    values[name] = getattr(action, name)
            for key, value in values.items():
                used = sorted(template_fields(value) & EXPORTED_FIELDS)
                if used:
                    msg = (
                        f"action {action.name!r}: {key} uses {{{used[0]}}}, which only "
                        "alerting.retune.export fills in (its files' URIs), and there is "
                        "none: the pipeline would get an empty string"
                    )
                    raise ValueError(msg)
        return self
