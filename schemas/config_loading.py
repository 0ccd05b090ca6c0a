"""Reading the configuration: the YAML file and `LOOKOUT_…` variables into a `LookoutConfig`,
and every problem as one readable line.

The model (`schemas.config`) says what a valid configuration is; this module says what went
wrong in the words of whoever wrote it: the key path as written in the file, the variable that
set it, a did-you-mean for a typo, never a value that may be a secret. Kept apart because it
walks the model's types to find keys and variables, which the model itself never needs.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from schemas.config import ACROSS_SECTIONS, BOOL_NOT_NUMBER, LookoutConfig, blamed_variable

log = logging.getLogger("lookout.config")


def key_origin(loc: tuple[str, ...], source: str, environ: Mapping[str, str] | None = None) -> str:
    """Who set the key at `loc`, worded as config problems are: `lookout.yaml: sink.path`, or
    `environment LOOKOUT_SINK__PATH (sink.path)` when a variable overrode the file."""
    where = ".".join(loc)
    variable = blamed_variable(loc, os.environ if environ is None else environ)
    if variable is not None:
        return f"environment {variable} ({where})"
    return f"{source}: {where}"


class ConfigError(Exception):
    """A configuration file that cannot be used; `problems` holds one readable line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


_SECRET_HINTS = ("url", "key", "token", "secret", "password")


def _describe(error: Any, environ: Mapping[str, str] | None = None) -> str:
    """`key.path: what is wrong (got value)`; strings are never echoed, since a misplaced
    secret (a webhook URL under the wrong key) would otherwise end up in a terminal or CI log.

    A value that came from a `LOOKOUT_…` variable is blamed on that variable, not on the file
    (`environment LOOKOUT_ENGINE__WINDOW_SECONDS (engine.window_seconds): …`), and its value is
    never shown: environment variables are where secrets live."""
    location = _location(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "value_error" and not error["loc"]:
        # a rule across sections (our own message names every key it involves)
        return message
    environ = os.environ if environ is None else environ
    variable = blamed_variable(error["loc"], environ)
    # a union member chosen by a variable's `kind`: its missing and unknown keys are its doing
    chosen = None if variable is not None else _kind_variable(error["loc"], environ)
    if error["type"] == "union_tag_invalid":
        context = error.get("ctx") or {}
        field = str(context.get("discriminator", "kind")).strip("'")
        tags = [t.strip(" '") for t in str(context.get("expected_tags", "")).split(",")]
        tag = str(context.get("tag", ""))
        variable = blamed_variable((*error["loc"], field), environ)
        location = f"{location}.{field}"
        # a variable's value is not shown (it may be anything, a secret pasted in the wrong one)
        shown = "value" if variable is not None else repr(tag)
        message = f"unknown {shown}; expected one of {', '.join(tags)}"
        close = difflib.get_close_matches(tag, tags, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    elif error["type"] == "extra_forbidden":
        message = _unknown_key(tuple(error["loc"]))
    elif variable is None and not any(hint in location.lower() for hint in _SECRET_HINTS):
        value = error.get("input")
        if isinstance(value, int | float | bool) and "got " not in message:
            message += f" (got {value!r})"
    if variable is not None:
        return f"environment {variable} ({location}): {message}"
    if chosen is not None:
        name, kind_at, tag, tag_index = chosen
        loc = tuple(error["loc"])
        where = _location(loc[:tag_index] + loc[tag_index + 1 :])
        return f"environment {name} ({kind_at}: {tag}): {where}: {message}"
    return f"{location}: {message}"


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """`unknown key`, with the closest key of the same section (never the key itself), and for
    a tagged union's member the other kinds that have it (`source.path` under kind pubsub)."""
    key = str(loc[-1])
    owner = _models(_annotation_at(loc[:-1]))
    candidates = set(_keys_of(owner[0])) if len(owner) == 1 else set(_known_keys())
    message = "unknown key"
    if len(loc) >= 3 and isinstance(loc[-2], str) and len(owner) == 1:
        members = _models(_annotation_at(loc[:-2]))
        kinds = [_tags_of(m) for m in members if m is not owner[0] and key in _keys_of(m)]
        if len(members) > 1 and loc[-2] in _tags_of(owner[0]):
            message += f" for kind {loc[-2]!r}"
            if kinds:
                message += f" (a key of kind {', '.join(repr(t) for k in kinds for t in k)})"
                return message
    close = difflib.get_close_matches(key, sorted(candidates - {key.lower()}), n=1, cutoff=0.75)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message


def _tags_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The `kind` values that choose this member of a tagged union."""
    field = model.model_fields.get("kind")
    if field is None:
        return ()
    return tuple(str(t) for t in typing.get_args(_unwrap(field.annotation)))


def _annotation_at(loc: Sequence[Any]) -> Any:
    """The type of the value at an error's `loc` (a tagged union's member tag included), or
    None where the path leaves the models."""
    annotation: Any = LookoutConfig
    for part in loc:
        if annotation is None:
            return None
        if isinstance(part, int):  # an item of a list or tuple
            items = [typing.get_args(m) for m in _members(annotation) if typing.get_args(m)]
            annotation = items[0][0] if items else None
            continue
        models = _models(annotation)
        member = next((m for m in models if len(models) > 1 and part in _tags_of(m)), None)
        if member is not None:
            annotation = member
            continue
        if _is_open(annotation):  # a mapping's value
            values = [typing.get_args(m)[-1] for m in _members(annotation) if typing.get_args(m)]
            annotation = values[0] if values else None
            continue
        field = _field_named(annotation, part)
        annotation = None if field is _MISSING else field
    return annotation


def _kind_variable(
    loc: Sequence[Any], environ: Mapping[str, str]
) -> tuple[str, str, str, int] | None:
    """The `LOOKOUT_…__KIND` variable that chose the tagged union's member `loc` runs through
    (`LOOKOUT_SOURCE__KIND=pubsub` for `source.pubsub.project`): (variable, the kind's key path,
    the tag, the tag's position in `loc`), or None if the member was the file's choice."""
    found = None
    for index in range(1, len(loc)):
        head, tag = loc[:index], loc[index]
        if not isinstance(tag, str) or not all(isinstance(p, str) for p in head):
            continue
        members = _models(_annotation_at(head))
        if len(members) < 2 or not any(tag in _tags_of(m) for m in members):
            continue
        wanted = _DELIMITER.join((*(str(p).lower() for p in head), "kind"))
        for name, value in environ.items():
            chose = name.upper().startswith(_PREFIX) and value.strip().lower() == tag.lower()
            if chose and name[len(_PREFIX) :].lower() == wanted:
                found = (name, ".".join((*head, "kind")), tag, index)
    return found


def _location(loc: Sequence[Any]) -> str:
    """`alerting.receivers[1].webhook_url`, written as the routes' checks write it: list
    positions in brackets, and without the tag pydantic adds for a tagged union's member
    (`receivers.1.slack.webhook_url`), which is no key of the file."""
    text = ""
    after_index = False
    for i, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
            after_index = True
            continue
        if (after_index and str(part) not in _known_keys()) or _is_member_tag(loc[:i], part):
            after_index = False
            continue  # the union member's tag (`sink.duckdb.memory_limit` is `sink.memory_limit`)
        text += f".{part}" if text else str(part)
        after_index = False
    return text or "(top level)"


def _is_member_tag(parent: Sequence[Any], part: Any) -> bool:
    """Whether `part` is the tag pydantic puts after a tagged union (`sink`, `source`) to say
    which member it checked, rather than a key of the file."""
    models = _models(_annotation_at(parent)) if parent else []
    return len(models) > 1 and any(part in _tags_of(m) for m in models)


@functools.cache
def _known_keys() -> frozenset[str]:
    """Every key the configuration file can hold, at any depth (for a typo's suggestion)."""
    keys: set[str] = set()
    seen: set[type] = set()

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return
            seen.add(annotation)
            for name, field in annotation.model_fields.items():
                keys.add(field.alias or name)
                walk(field.annotation)
            return
        for argument in typing.get_args(annotation):
            walk(argument)

    walk(LookoutConfig)
    return frozenset(keys)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where the YAML is broken, without quoting the line (it may hold a secret), and where
    what it broke began: a quote left open on line 3 is found at the end of the file."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "syntax error"
    began = getattr(error, "context_mark", None)
    context = getattr(error, "context", None)
    since = (
        f" ({context} at line {began.line + 1}, column {began.column + 1})"
        if began is not None and context and (mark is None or began.line != mark.line)
        else ""
    )
    if mark is None:
        return f"not valid YAML: {problem}{since}"
    return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}{since}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error.

    PyYAML keeps the last value silently, so a second `engine:` section (pasted from another
    file) replaced the first one whole and `config check` said ok. Explicit keys that override
    a `<<:` merge are YAML's intended use and stay allowed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[type, Any], yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault((type(key), key), key_node)
            except TypeError:
                continue  # unhashable: the base class says so
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (also at line {first.start_mark.line + 1}; "
                    "YAML would keep only the last one)",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


#: how a file a user might pass by mistake begins, and what it is
_BINARY_KINDS = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "a zip archive"}


def _yaml_text(data: bytes) -> str:
    """The file as text; a binary file given by mistake (a gzip of logs, a DuckDB file) raises
    UnicodeDecodeError here, which becomes one line instead of a decoder's traceback."""
    return data.decode("utf-8-sig")


def _not_text(error: UnicodeDecodeError) -> str:
    head = bytes(error.object[:4])
    kind = next((k for magic, k in _BINARY_KINDS.items() if head.startswith(magic)), None)
    what = kind or f"not UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start})"
    return f"not a text YAML file ({what}); give the YAML configuration file"


def load_config(path: Path | None, overrides: Mapping[str, object] | None = None) -> LookoutConfig:
    """The configuration from a YAML file (or defaults), with environment overrides.

    `overrides` (`{"engine__role": "ingest"}`, from command-line options) are part of what is
    validated: a file that is valid only for the role it is run as (an ingest replica's, with
    routes but no receivers) must not be refused as the default role first."""
    source = str(path) if path is not None else "defaults"
    data: Any = {}
    if path is not None:
        try:
            data = yaml.load(_yaml_text(path.read_bytes()), Loader=_UniqueKeyLoader)
            if data is None:
                # a blank ConfigMap mount ran a worker on stdin with every default, silently
                log.warning(
                    "%s is empty (or only comments): every setting is its default or a LOOKOUT_… "
                    "variable's",
                    path,
                )
                data = {}
        except OSError as error:
            raise ConfigError(source, [f"cannot read: {error.strerror}"]) from error
        except UnicodeDecodeError as error:
            raise ConfigError(source, [_not_text(error)]) from None
        except yaml.YAMLError as error:
            raise ConfigError(source, [_yaml_problem(error)]) from None
        if not isinstance(data, dict):
            raise ConfigError(source, ["the top level must be a mapping of sections"])
    unknown, ignored = _unknown_env_variables(os.environ, _secret_env_names(data, os.environ))
    for problem in ignored:
        log.warning("%s", problem)
    if unknown:
        raise ConfigError(source, unknown)
    # a command-line value beats the file and a LOOKOUT_… variable for the same key
    shadowed: dict[str, str] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition("__")
        if key and isinstance(data.get(section, {}), dict):
            data[section] = {**data.get(section, {}), key: value}
            keys = [key]
        elif not key:  # a whole section (`--db`: the DuckDB sink at that path)
            data[section] = value
            keys = list(value) if isinstance(value, Mapping) else []
        else:
            continue
        for name in keys:
            variable = f"LOOKOUT_{section}__{name}".upper()
            if variable in os.environ:
                shadowed[variable] = os.environ.pop(variable)
    try:
        return LookoutConfig(**data)
    except SettingsError as error:  # a LOOKOUT_… value that must be JSON and is not
        raise ConfigError(source, _not_json_problems(error, os.environ)) from None
    except ValidationError as error:
        problems: list[str] = []
        for e in error.errors():
            if e["type"] in (BOOL_NOT_NUMBER, ACROSS_SECTIONS):
                problems.extend((e.get("ctx") or {}).get("each", []))  # one line each
            else:
                problems.append(_describe(e))
        raise ConfigError(source, [_receiver_named(p, data) for p in problems]) from error
    finally:
        os.environ.update(shadowed)


_RECEIVER_AT = re.compile(r"^alerting\.receivers\[(\d+)\]")


def _receiver_named(problem: str, data: Any) -> str:
    """`alerting.receivers[0] (am).url: …`: a list position alone made the operator count
    receivers to find which one (the README promises the receiver's name)."""
    at = _RECEIVER_AT.match(problem)
    receivers = data.get("alerting", {}).get("receivers") if isinstance(data, dict) else None
    if at is None or not isinstance(receivers, list) or int(at[1]) >= len(receivers):
        return problem
    entry = receivers[int(at[1])]
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name or f"receiver {name!r}" in problem:
        return problem
    return f"{at[0]} ({name}){problem[at.end() :]}"


#: `LOOKOUT_…` variables that are no setting of this file: read by the CLI, the decoder and the
#: build (README), or by the test suite
_OTHER_VARIABLES = frozenset(
    {
        "LOOKOUT_BLAS_THREADS",
        "LOOKOUT_DEBUG",
        "LOOKOUT_DECODER",
        "LOOKOUT_FUZZ_EXAMPLES",
        "LOOKOUT_KEYHASH",
        "LOOKOUT_LOG_FORMAT",
        "LOOKOUT_LOG_LEVEL",
        "LOOKOUT_PURE_PYTHON",
    }
)
#: the Helm chart passes each receiver secret as LOOKOUT_SECRET_<RECEIVER>_<FIELD>; an ingest
#: pod's file names none of them
_CHART_SECRET_PREFIX = "LOOKOUT_SECRET_"
_PREFIX = "LOOKOUT_"
_DELIMITER = "__"


def _secret_env_names(data: Any, environ: Mapping[str, str]) -> frozenset[str]:
    """The variables the configuration's `{env: NAME}` secret references name, in the file or
    in a `LOOKOUT_…` variable holding a JSON section: read as secrets, never as settings."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            ref = value.get("env")
            if isinstance(ref, str):
                names.add(ref.upper())
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(data)
    for name, text in environ.items():
        if name.upper().startswith(_PREFIX) and text.lstrip()[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                walk(json.loads(text))
    return frozenset(names)


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    """A union's members (without None), or the type itself."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def _keys_of(model: type[BaseModel]) -> dict[str, str]:
    """Key as written (alias or name, lowercase) -> field name."""
    keys: dict[str, str] = {}
    for name, field in model.model_fields.items():
        keys[name.lower()] = name
        if field.alias:
            keys[field.alias.lower()] = name
    return keys


def _field_named(annotation: Any, key: str) -> Any:
    """The annotation of `key` (as written, lowercase) in the model, or any member of the union
    of models, `annotation` is; `_MISSING` if none has it."""
    for model in _models(annotation):
        keys = _keys_of(model)
        if key in keys:
            return model.model_fields[keys[key]].annotation
    return _MISSING


_MISSING = object()


def _is_open(annotation: Any) -> bool:
    """A mapping: a nested variable may name any key below it."""
    for member in _members(annotation):
        origin = typing.get_origin(member) or member
        if isinstance(origin, type) and issubclass(origin, Mapping):
            return True
    return False


def _setting_exists(parts: Sequence[str]) -> bool:
    """Whether `LOOKOUT_A__B__C` (parts a, b, c) names a key pydantic-settings would place:
    each part a key of the model above it (of any member of a tagged union), or any key below
    a mapping."""
    return _target(parts) is not _MISSING


@functools.cache
def _setting_variables() -> tuple[str, ...]:
    """Every variable name that sets a key (lowercase, without the prefix): `engine`,
    `engine__window_seconds`, `detectors__latency__slo__threshold_ms`, ..."""
    found: list[str] = []

    def walk(annotation: Any, prefix: str, depth: int) -> None:
        if depth > 6:
            return
        for model in _models(annotation):
            for name, field in model.model_fields.items():
                key = f"{prefix}{(field.alias or name).lower()}"
                if key not in found:
                    found.append(key)
                walk(field.annotation, key + _DELIMITER, depth + 1)

    walk(LookoutConfig, "", 0)
    return tuple(found)


def _suggested_variables(rest: str) -> list[str]:
    """What `LOOKOUT_<rest>` probably meant: the same words with the double underscore in
    place (`ENGINE_WINDOW_SECONDS`), a near spelling (`ALERT_OUT`, `ENGIN__WINDOW_SECONDS`),
    or a key without its section (`WINDOW_SECONDS`)."""
    known = _setting_variables()
    squashed = rest.replace("_", "")
    same = [k for k in known if k.replace("_", "") == squashed and k != rest]
    if same:
        return same[:1]
    close = [k for k in difflib.get_close_matches(rest, known, n=1, cutoff=0.8) if k != rest]
    if close:
        return close
    return [k for k in known if _DELIMITER in k and k.rsplit(_DELIMITER, 1)[1] == rest][:3]


def _variable(rest: str) -> str:
    return f"{_PREFIX}{rest}".upper()


def _unknown_env_variables(
    environ: Mapping[str, str], secrets: frozenset[str] = frozenset()
) -> tuple[list[str], list[str]]:
    """`LOOKOUT_…` variables that set no key: (refused, ignored), one line each, naming the
    variable and never its value. pydantic-settings matches names case-insensitively and skips
    any it cannot place, so a typo (`LOOKOUT_ENGIN__WINDOW_SECONDS`, `LOOKOUT_ENGINE_WINDOW_SECONDS`
    with one underscore, `LOOKOUT_ALERT_OUT`) silently left the file's value in force.

    A variable in the nested form, or one that reads as a misspelt setting (there is a
    did-you-mean), is refused, as a misspelt key of the file is. Any other is only warned
    about: it may be meant for something else (a receiver secret this file does not name).
    Variables read elsewhere (`LOOKOUT_DEBUG`, `LOOKOUT_DECODER`, ...), the chart's
    `LOOKOUT_SECRET_…` and the variables the file's `{env: NAME}` references name are not
    settings and are never reported."""
    sections = sorted(LookoutConfig.model_fields)
    refused: list[str] = []
    ignored: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(_PREFIX) or upper in _OTHER_VARIABLES or upper in secrets:
            continue
        if upper.startswith(_CHART_SECRET_PREFIX):
            continue
        rest = name[len(_PREFIX) :].lower()
        parts = rest.split(_DELIMITER)
        if _setting_exists(parts):
            continue
        suggested = _suggested_variables(rest)
        mean = " or ".join(_variable(k) for k in suggested)
        if _DELIMITER in rest and parts[0] not in LookoutConfig.model_fields:
            problem = f"environment {name}: unknown section {parts[0]!r}"
            if suggested:
                problem += f"; did you mean {mean}?"
            refused.append(f"{problem} (expected one of {', '.join(sections)})")
        elif _DELIMITER in rest:
            problem = f"environment {name} ({rest.replace(_DELIMITER, '.')}): no such key"
            refused.append(f"{problem}; did you mean {mean}?" if suggested else problem)
        elif suggested:
            hint = " (nested keys take a double underscore)" if _DELIMITER in mean else ""
            refused.append(f"environment {name}: no such setting{hint}; did you mean {mean}?")
        else:
            ignored.append(
                f"environment {name}: ignored, not a setting (LOOKOUT_<SECTION>__<KEY>) and "
                "named by no {env: ...} reference of this configuration"
            )
    return refused, ignored


def _is_complex(annotation: Any) -> bool:
    """A type pydantic-settings reads from a variable as JSON (a section, a list, a mapping)."""
    for member in _members(annotation):
        origin = typing.get_origin(member) or member
        if not isinstance(origin, type) or issubclass(origin, str | bytes):
            continue
        if issubclass(origin, BaseModel | Mapping | Sequence | set | frozenset):
            return True
    return False


def _target(parts: Sequence[str]) -> Any:
    """The annotation `LOOKOUT_<parts>` sets (None below a mapping), or `_MISSING`."""
    annotation: Any = LookoutConfig
    for part in parts:
        if _is_open(annotation):
            return None
        annotation = _field_named(annotation, part)
        if annotation is _MISSING:
            return _MISSING
    return annotation


def _json_example(annotation: Any) -> str:
    for member in _members(annotation):
        origin = typing.get_origin(member) or member
        if isinstance(origin, type) and issubclass(origin, BaseModel):
            return '{"key": value, ...}'
        if isinstance(origin, type) and issubclass(origin, Mapping):
            return '{"name": "value"}'
    return '["a", "b"]'


def _not_json_problems(error: SettingsError, environ: Mapping[str, str]) -> list[str]:
    """pydantic-settings gave up on a value it must read as JSON (`LOOKOUT_METRICS__MODELS=a,b`)
    naming only the section: name the variable and the form it needs, not the value."""
    named = re.search(r'for field "([^"]+)"', str(error))
    section = named.group(1).lower() if named else None
    problems = []
    for name in sorted(environ):
        rest = name[len(_PREFIX) :].lower() if name.upper().startswith(_PREFIX) else None
        if rest is None or not environ[name]:
            continue
        parts = rest.split(_DELIMITER)
        if section is not None and parts[0] != section:
            continue
        annotation = _target(parts)
        if annotation is None or annotation is _MISSING or not _is_complex(annotation):
            continue
        try:
            json.loads(environ[name])
        except ValueError:
            where = ".".join(parts)
            problems.append(
                f"environment {name} ({where}): not valid JSON; a value of this kind is given "
                f"as JSON, e.g. {name}='{_json_example(annotation)}' (the value is not shown)"
            )
    if problems:
        return problems
    where = f"LOOKOUT_{section.upper()}…" if section else "a LOOKOUT_… variable"
    return [f"environment {where}: a value cannot be read (lists and sections are given as JSON)"]
