"""The retune actions. Heavy clients are imported lazily, only by the action that needs them:
`google-cloud-pubsub` (a core dependency) for `pubsub`; `google-cloud-aiplatform` and `kfp`
(the `lookout[retune]` extra) for `vertex_pipeline` and `kfp`.

Every action is bounded by its `timeout_seconds`: each client call gets it, and the action as a
whole runs on a helper thread it is awaited for no longer (a Vertex AI submit first looks up
the pipeline root's bucket, retried for two minutes, with no timeout of ours). A failure is one
short reason (`RetuneActionError`), never a client's traceback or HTTP headers.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from alerts.retune.request import RetuneRequest, request_id
from schemas.alert_types import SecretRef
from schemas.retune_config import KfpRetune, PubSubRetune, RetuneAction, VertexPipelineRetune

T = TypeVar("T")

log = logging.getLogger("lookout.retune")


class RetuneActionError(Exception):
    """An action could not be carried out; the message is one short line saying why (the
    trigger names the action and model)."""


class AlreadyStarted(Exception):
    """The run exists already: a retry of a request whose first attempt was given up (a
    timeout) although the job was created. `created` names it."""

    def __init__(self, created: str) -> None:
        super().__init__(created)
        self.created = created


def run_action(action: RetuneAction, request: RetuneRequest) -> str:
    """Carry out `action` for `request`; returns what was created (message or job id).
    Raises `RetuneActionError` (one line) or `AlreadyStarted`."""
    send: Callable[[], str]
    if isinstance(action, PubSubRetune):
        send = partial(publish_request, action, request)
    elif isinstance(action, VertexPipelineRetune):
        send = partial(submit_vertex_pipeline, action, request)
    else:
        send = partial(create_kfp_run, action, request)
    try:
        return within(action.timeout_seconds, send)
    except _GaveUp:
        msg = f"{doing(action)}: {timeout_reason(action.timeout_seconds)}"
        raise RetuneActionError(msg) from None


def doing(action: RetuneAction) -> str:
    """What carrying out `action` is, in the words of its errors."""
    if isinstance(action, PubSubRetune):
        return f"publishing to {action.topic}"
    if isinstance(action, VertexPipelineRetune):
        return "submitting the Vertex AI pipeline job"
    return f"creating the Kubeflow run on {action.host}"


class _GaveUp(Exception):
    """`within` stopped waiting."""


def within(seconds: float, call: Callable[[], T]) -> T:
    """`call()`, awaited for at most `seconds` on a helper thread (else `_GaveUp`). A call
    still running then is left to finish on its own (a daemon thread: it holds up no exit); a
    Vertex AI job or Kubeflow run it then creates answers the retry as already started."""
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:  # handed to the waiting thread
            outcome.append((False, error))
        finally:
            done.set()

    threading.Thread(target=run, name="lookout-retune-call", daemon=True).start()
    if not done.wait(seconds):
        raise _GaveUp
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def timeout_reason(seconds: float) -> str:
    return f"no answer within {seconds:g}s (timeout_seconds)"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and what it wraps: causes, contexts, exception arguments, urllib3's `reason`."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        inner += [getattr(current, "cause", None), *current.args]
        todo += [e for e in inner if isinstance(e, BaseException)]


def _kinds(error: BaseException) -> set[str]:
    """Class names along the MRO: urllib3, requests and google-api-core are matched by name so
    this module imports none of them (each action's client brings its own)."""
    return {cls.__name__ for cls in type(error).__mro__}


def short_reason(error: BaseException, timeout: float) -> str:
    """One line for a client's exception: a timeout as the setting it hit, a refused connection
    with its address, an API error as status and message, else the first line of its text
    (or its type, for the exceptions that have none: a Pub/Sub publish timing out)."""
    chain = list(_chain(error))
    for link in chain:
        if "NewConnectionError" in _kinds(link):
            return _connection_reason(link)
    for link in chain:
        if _kinds(link) & {"TimeoutError", "Timeout", "DeadlineExceeded", "timeout"}:
            return timeout_reason(timeout)
    for link in chain:
        reason = _api_reason(link)
        if reason is not None:
            return reason
    if "DefaultCredentialsError" in _kinds(error):
        first = str(error).split(". ")[0].rstrip(".")
        return f"no Google credentials here ({first}: set GOOGLE_APPLICATION_CREDENTIALS)"
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _connection_reason(error: BaseException) -> str:
    conn = getattr(error, "conn", None)
    where = f" {conn.host}:{conn.port}" if conn is not None else ""
    if "NameResolutionError" in _kinds(error):
        return f"cannot connect to{where}: host name not found"
    cause = next((e for e in _chain(error) if isinstance(e, OSError) and e.strerror), None)
    said = cause.strerror if cause is not None else str(error).rsplit("] ", 1)[-1]
    return f"cannot connect to{where}: {said}"


def _api_reason(error: BaseException) -> str | None:
    """`403 Forbidden: <the server's message>` from a google-api-core error or a kfp
    `ApiException` (whose text is five lines with the response headers)."""
    kinds = _kinds(error)
    if "GoogleAPICallError" in kinds:
        # over REST the message starts with the request (`POST https://...?pipelineJobId=...: `)
        text = _REQUEST_PREFIX.sub("", str(getattr(error, "message", "") or "").strip())
        lines = text.splitlines()
        said = f": {lines[0]}" if lines else ""
        return f"{getattr(error, 'code', '')} {type(error).__name__}{said}".strip()
    if "ApiException" in kinds and getattr(error, "status", None):
        message = _body_message(getattr(error, "body", None))
        said = f": {message}" if message else ""
        return f"{getattr(error, 'status', '')} {getattr(error, 'reason', '')}{said}"
    return None


_REQUEST_PREFIX = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ")


def _body_message(body: Any) -> str | None:
    """The message in a JSON error body (`{"error": {"message"}}`, or KFP's `{"message"}`)."""
    try:
        data = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    inner = data.get("error")
    message = (inner.get("message") if isinstance(inner, dict) else None) or data.get("message")
    return str(message).splitlines()[0] if message else None


def read_token(ref: SecretRef, action: str) -> str:
    """The action's `existing_token`, read now (a mounted token is rotated). The error names
    where it should have been, never a value."""
    from alerts.receivers.secrets import SecretError, resolve_secret

    try:
        return resolve_secret(ref, receiver=action, field="existing_token")
    except SecretError as error:
        where = f"receiver {action!r} existing_token ({ref.describe()}): "
        msg = f"existing_token ({ref.describe()}): {str(error).removeprefix(where)}"
        raise RetuneActionError(msg) from None


def publish_request(action: PubSubRetune, request: RetuneRequest) -> str:
    """Publish the request JSON; attributes let a subscription filter by model or action.
    Honours PUBSUB_EMULATOR_HOST like every Pub/Sub client.

    A publish cannot be made idempotent (Pub/Sub takes no id from the publisher): one given up
    after `timeout_seconds` may be delivered all the same, and the retry at the incident's next
    alerting window is then a second message. Both carry the request's id, the same at every
    attempt, as `retune_request_id`, so the consumer can see they are one request (or use it
    as its pipeline job's id, which Vertex AI refuses twice)."""
    from google.cloud import pubsub_v1

    publisher, future = None, None
    try:
        # built inside: missing credentials are raised here, and must be this action's failure
        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(action.project, action.topic)
        future = publisher.publish(
            topic,
            request.to_json(),
            timeout=action.timeout_seconds,
            model=request.model,
            detector=request.detector,
            action=action.name,
            retune_request_id=request_id(action.name, request),
        )
        message_id: str = future.result(timeout=action.timeout_seconds)
    except Exception as error:
        reason = short_reason(error, action.timeout_seconds)
        msg = f"{doing(action)}: {reason}"
        raise RetuneActionError(msg) from error
    finally:
        if publisher is not None:
            _close_when_done(publisher, future)
    return message_id


def _close_when_done(publisher: Any, future: Any) -> None:
    """Close the publisher's channel once its publish has ended: closed under a publish that
    timed out, the client's batch thread died on its next try with a traceback on stderr."""
    if future is None or future.done():
        publisher.transport.close()
    else:
        future.add_done_callback(lambda _: publisher.transport.close())


def render_parameters(
    values: dict[str, Any], request: RetuneRequest, **extra: str
) -> dict[str, Any]:
    return {name: request.render(value, **extra) for name, value in values.items()}


def vertex_job_id(action: str, request: RetuneRequest) -> str:
    """The PipelineJob id: the request's id. The client's default,
    `<pipeline>-<wall-clock second>`, was the same for two models alerting in one second (the
    second refused as already existing), and new on a retry, which then started a second
    tuning job when the first attempt timed out after all; Vertex AI refuses a job id it has
    (409), which the retry reads as already started."""
    return request_id(action, request)


def kfp_run_description(action: str, request: RetuneRequest) -> str:
    """The Kubeflow run's description, naming the request's id: Kubeflow Pipelines makes run
    ids itself (a client cannot name its run as it names a Vertex AI job), so a retry looks
    the first attempt's run up by this, the one field it can set and filter runs by exactly
    (the run name is the configured `run_name`, the same for every incident of a model)."""
    return f"lookout retune request {request_id(action, request)}"


def _vertex_fields(action: VertexPipelineRetune) -> dict[str, str]:
    """What a `vertex_pipeline` action's strings may use beyond the request's fields."""
    return {"project": action.project, "location": action.location}


def _vertex_values(action: VertexPipelineRetune, request: RetuneRequest) -> dict[str, Any]:
    return render_parameters(action.parameter_values, request, **_vertex_fields(action))


def _quiet_vertex_logs() -> None:
    """aiplatform logs through loggers of its own (INFO, with a handler on stdout when it finds
    none): a bucket it cannot reach printed a 90-line traceback, and a submit its progress.
    The action's outcome is the trigger's one line."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("google.cloud.aiplatform"):
            logging.getLogger(name).disabled = True


def submit_vertex_pipeline(action: VertexPipelineRetune, request: RetuneRequest) -> str:
    """Submit a Vertex AI PipelineJob from `template_path` (does not wait for it to run)."""
    try:
        # by name: a static import would make mypy analyse the typed aiplatform package and
        # with it the google.cloud namespace, hiding the untyped Pub/Sub client beside it
        aiplatform: Any = importlib.import_module("google.cloud.aiplatform")
        credentials: Any = importlib.import_module("google.auth.credentials")
        api_errors: Any = importlib.import_module("google.api_core.exceptions")
    except ImportError as error:
        msg = "the vertex_pipeline action needs the retune extra: pip install 'lookout[retune]'"
        raise RetuneActionError(msg) from error
    _quiet_vertex_logs()
    init: dict[str, Any] = {"project": action.project, "location": action.location}
    if action.api_endpoint is not None:
        init.update(api_endpoint=action.api_endpoint, api_transport="rest")
        if action.api_endpoint.startswith("http://"):
            # plain HTTP is only ever a local stand-in or emulator: send no credentials there
            init["credentials"] = credentials.AnonymousCredentials()
    job_id = vertex_job_id(action.name, request)
    try:
        aiplatform.init(**init)
        job = aiplatform.PipelineJob(
            display_name=request.render(action.display_name, **_vertex_fields(action)),
            template_path=action.template_path,
            job_id=job_id,
            pipeline_root=action.pipeline_root,
            parameter_values=_vertex_values(action, request),
            enable_caching=action.enable_caching,
            project=action.project,
            location=action.location,
        )
        job.submit(
            service_account=action.service_account,
            create_request_timeout=action.timeout_seconds,
        )
    except api_errors.Conflict as error:
        name = f"projects/{action.project}/locations/{action.location}/pipelineJobs/{job_id}"
        raise AlreadyStarted(name) from error
    except Exception as error:
        reason = short_reason(error, action.timeout_seconds)
        msg = f"{doing(action)}: {reason}"
        raise RetuneActionError(msg) from error
    return str(job.resource_name)


def _bound_requests(api_client: Any, timeout: tuple[float, float]) -> None:
    """Give every request of a kfp API client a (connect, read) timeout: the client passes
    none, and a hung endpoint held the action for good."""
    rest = api_client.rest_client
    if getattr(rest, "lookout_bounded", False):
        return
    original = rest.request

    def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return original(*args, _request_timeout=_request_timeout or timeout, **kwargs)

    rest.request = request
    rest.lookout_bounded = True


def _kfp_client(kfp: Any, action: KfpRetune, token: str | None) -> Any:
    timeout = (action.timeout_seconds, action.timeout_seconds)

    class Client(kfp.Client):  # type: ignore[misc]
        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            """One bounded try: the client's own tries five times, 5 s apart, unbounded, and
            logs every failure's traceback on the root logger."""
            _bound_requests(self._healthz_api.api_client, timeout)
            return self._healthz_api.healthz_service_get_healthz()

    with warnings.catch_warnings():
        # the client warns on every construction that it needs a KFP v2 backend
        warnings.simplefilter("ignore", FutureWarning)
        client = Client(host=action.host, namespace=action.namespace, existing_token=token)
    _bound_requests(client._run_api.api_client, timeout)
    return client


def create_kfp_run(action: KfpRetune, request: RetuneRequest) -> str:
    """Create a run from a compiled package on a Kubeflow Pipelines endpoint, once per
    incident: a run the request's earlier attempt created after it was given up (a timeout)
    is found by its description and answered as `AlreadyStarted`, not made twice.

    Through the client's API objects, not `create_run_from_pipeline_package`: that prints
    `Experiment details: <url>` and `Run details: <url>` on stdout, in the middle of the alert
    JSON lines of `--alerts-out /dev/stdout`, and sets no description. The link is logged
    (INFO) instead."""
    try:
        import kfp

        # by name: the client's generated API package has no type information
        kfp_server_api: Any = importlib.import_module("kfp_server_api")
    except ImportError as error:
        msg = "the kfp action needs the retune extra: pip install 'lookout[retune]'"
        raise RetuneActionError(msg) from error
    token = (
        None if action.existing_token is None else read_token(action.existing_token, action.name)
    )
    description = kfp_run_description(action.name, request)
    # what failed, in the error: a health check refused said "creating the Kubeflow run"
    # although no run was ever asked for (an ML engineer's trial)
    step = f"reaching the Kubeflow Pipelines API on {action.host} (health check)"
    try:
        client = _kfp_client(kfp, action, token)
        step = f"finding the experiment on {action.host}"
        namespace = action.namespace or client.get_user_namespace()
        experiment_id = action.experiment_id or _default_experiment(
            client, kfp_server_api, namespace
        )
        step = f"looking for an earlier attempt's run on {action.host}"
        existing = _run_described(client, experiment_id, namespace, description)
        step = doing(action)
        if existing is None:
            job = client._create_job_config(
                params=render_parameters(action.parameters, request),
                pipeline_package_path=action.package_path,
                pipeline_id=None,
                version_id=None,
                enable_caching=None,
                cache_key=None,
                pipeline_root=None,
            )
            run = client._run_api.run_service_create_run(
                run=kfp_server_api.V2beta1Run(
                    experiment_id=experiment_id,
                    display_name=request.render(action.run_name),
                    description=description,
                    pipeline_spec=job.pipeline_spec,
                    runtime_config=job.runtime_config,
                )
            )
    except Exception as error:
        reason = short_reason(error, action.timeout_seconds)
        msg = f"{step}: {reason}"
        raise RetuneActionError(msg) from error
    if existing is not None:
        raise AlreadyStarted(existing)
    if not getattr(run, "run_id", None):
        # a proxy or a login page answering 200: counted as started, the retune was lost
        msg = (
            f"{doing(action)}: the answer carried no run id; is {action.host} a Kubeflow "
            "Pipelines API (not a proxy or a login page)?"
        )
        raise RetuneActionError(msg)
    run_id = str(run.run_id)
    log.info(
        "retune %s for %s: Kubeflow run %s: %s/#/runs/details/%s",
        action.name,
        request.model,
        run_id,
        client._get_url_prefix(),
        run_id,
    )
    return run_id


#: the client's environment variables for the experiment of a run given none
_KFP_EXPERIMENT_OVERRIDE = "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"
_KFP_EXPERIMENT_DEFAULT = "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME"


def _default_experiment(client: Any, kfp_server_api: Any, namespace: str | None) -> str:
    """The id of the experiment the client's `create_run_from_pipeline_package` puts a run
    given no `experiment_id` in (named by its environment variables, else `Default`), created
    if missing, as it does: its own lookup prints the experiment's link on stdout."""
    name = os.environ.get(_KFP_EXPERIMENT_OVERRIDE) or os.environ.get(_KFP_EXPERIMENT_DEFAULT)
    name = name or "Default"
    try:
        return str(client.get_experiment(experiment_name=name, namespace=namespace).experiment_id)
    except ValueError as error:
        if not str(error).startswith("No experiment is found"):
            raise
    created = client._experiment_api.experiment_service_create_experiment(
        experiment=kfp_server_api.V2beta1Experiment(display_name=name, namespace=namespace)
    )
    log.info("Kubeflow experiment %r created: %s", name, created.experiment_id)
    return str(created.experiment_id)


def _run_described(
    client: Any, experiment_id: str | None, namespace: str | None, description: str
) -> str | None:
    """The id of a run in the experiment with this description (the request's earlier
    attempt's), None if there is none. Looked up before creating, not atomically: a first
    attempt whose run is created only after the retry's lookup (more than an alerting window
    late) still makes a second run."""
    found = client.list_runs(
        page_size=1,
        experiment_id=experiment_id,
        namespace=namespace,
        filter=json.dumps(
            {
                "predicates": [
                    {"operation": "EQUALS", "key": "description", "stringValue": description}
                ]
            }
        ),
    )
    runs = found.runs or []
    return str(runs[0].run_id) if runs else None


def is_local(path: str) -> bool:
    """A path on this machine, not `gs://` or an Artifact Registry `https://` URL."""
    return "://" not in path or path.startswith("file://")


def pipeline_inputs(path: str) -> dict[str, bool] | None:
    """The compiled pipeline's input parameters at a local `path` (name: required), None when
    the file does not say (not a KFP v2 pipeline spec). Raises `RetuneActionError` when it
    cannot be read."""
    where = Path(path.removeprefix("file://"))
    try:
        with where.open("rb") as file:
            document = next(iter(yaml.safe_load_all(file)), None)
    except OSError as error:
        msg = f"{path}: {error.strerror or type(error).__name__}"
        raise RetuneActionError(msg) from None
    except yaml.YAMLError as error:
        msg = f"{path}: not a compiled pipeline (YAML or JSON): {_first_line(error)}"
        raise RetuneActionError(msg) from None
    if not isinstance(document, dict):
        return None
    spec = document.get("pipelineSpec", document)  # a PipelineJob JSON wraps the spec
    root = spec.get("root") if isinstance(spec, dict) else None
    definitions = root.get("inputDefinitions", {}) if isinstance(root, dict) else None
    parameters = definitions.get("parameters") if isinstance(definitions, dict) else None
    if not isinstance(parameters, dict):
        return None if definitions is None else {}
    return {
        name: not (isinstance(about, dict) and (about.get("isOptional") or "defaultValue" in about))
        for name, about in parameters.items()
    }


def _package(action: RetuneAction) -> tuple[str, str, dict[str, Any]] | None:
    """(field, path, parameters) of an action that runs a compiled pipeline."""
    if isinstance(action, VertexPipelineRetune):
        return "template_path", action.template_path, action.parameter_values
    if isinstance(action, KfpRetune):
        return "package_path", action.package_path, action.parameters
    return None


def package_problem(action: RetuneAction) -> str | None:
    """Why `action`'s local compiled pipeline cannot take its parameters (None: it can, or it
    is not local and is not fetched to check): a missing file, one that is not a pipeline, a
    parameter the pipeline does not take or one it needs and is not given. All of these
    passed `config check` and failed at the first sustained incident."""
    package = _package(action)
    if package is None or not is_local(package[1]):
        return None
    field, path, given = package
    try:
        inputs = pipeline_inputs(path)
    except RetuneActionError as error:
        return f"{field} {error}"
    if inputs is None:
        return None
    pipeline = f"the pipeline in {field} {path}"
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        return f"{pipeline} takes no {', '.join(unknown)} (its inputs: {', '.join(sorted(inputs))})"
    needed = sorted(name for name, required in inputs.items() if required and name not in given)
    if needed:
        return f"{pipeline} needs {', '.join(needed)}, which the action does not give"
    return None


def preview(action: RetuneAction, request: RetuneRequest) -> str:
    """What `action` would send for `request` (a dry run's log line): everything is rendered
    and the local pipeline checked against its parameters, only the call is left out. Values
    are parameters, never secrets: an `existing_token` is named by where it is read from."""
    problem = package_problem(action)
    if problem is not None:
        raise RetuneActionError(problem)
    if isinstance(action, PubSubRetune):
        fields = {
            "dataset_uri": request.dataset_uri,
            "evaluation_data_uri": request.evaluation_data_uri,
            "time_range": f"{request.time_range.start.isoformat()}/"
            f"{request.time_range.end.isoformat()}",
        }
        return f"publish to projects/{action.project}/topics/{action.topic} ({_listed(fields)})"
    if isinstance(action, VertexPipelineRetune):
        job = vertex_job_id(action.name, request)
        return (
            f"submit Vertex AI pipeline job {job} in {action.project}/{action.location} from "
            f"{action.template_path} ({_listed(_vertex_values(action, request))})"
        )
    token = (
        "" if action.existing_token is None else f", token from {action.existing_token.describe()}"
    )
    return (
        f"create Kubeflow run {request.render(action.run_name)!r} on {action.host}{token} from "
        f"{action.package_path} ({_listed(render_parameters(action.parameters, request))})"
    )


def _listed(values: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in values.items()) or "no parameters"


#: the modules each action kind needs beyond the base install (the `retune` extra)
_EXTRA_MODULES = {"vertex_pipeline": "google.cloud.aiplatform", "kfp": "kfp"}


def missing_extras(actions: Sequence[Any]) -> list[str]:
    """One line per retune action whose client library is not installed here. Found at the
    first incident long enough to retune, after `lookout run` had started and `config check`
    had said ok: the retune never happened, and the run exited 0."""
    problems = []
    for action in actions:
        module = _EXTRA_MODULES.get(getattr(action, "kind", ""))
        if module is None or getattr(action, "dry_run", False):
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing too
            found = False
        if not found:
            problems.append(
                f"retune action {action.name!r} ({action.kind}) needs the retune extra, not "
                f"installed here ({module}): `.venv/bin/pip install -r requirements-retune.lock` "
                "in a clone, `pip install 'lookout[retune]'` otherwise"
            )
    return problems


def start_problems(actions: Sequence[RetuneAction]) -> list[str]:
    """What stops `lookout run` from starting with these (routed) actions, and what `config
    check` warns of: a client not installed, a local compiled pipeline missing or not fitting
    the parameters, an `existing_token` that cannot be read here.

    Warnings in `config check`, not errors: the file is checked where it is written (a laptop,
    CI) more often than where it runs, and the package and token are mounted into the pod
    (`/etc/lookout/tune.yaml`, a secret volume), like a receiver's secret. Where it runs, they
    are errors: found at start, not at the first sustained incident hours later."""
    problems = missing_extras(actions)
    for action in actions:
        problem = package_problem(action)
        if problem is not None:
            problems.append(f"retune action {action.name!r}: {problem}")
        if isinstance(action, KfpRetune) and action.existing_token is not None:
            try:
                read_token(action.existing_token, action.name)
            except RetuneActionError as error:
                problems.append(f"retune action {action.name!r}: {error}")
    return problems
