"""The retune actions. Heavy clients are imported lazily, only by the action that needs them:
`google-cloud-pubsub` (a core dependency) for `pubsub`; `google-cloud-aiplatform` and `kfp`
(the `lookout[retune]` extra) for `vertex_pipeline` and `kfp`.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Sequence
from typing import Any

from alerts.retune.request import RetuneRequest
from schemas.retune_config import KfpRetune, PubSubRetune, RetuneAction, VertexPipelineRetune


class RetuneActionError(Exception):
    """An action could not be carried out; the message names the action and the step."""


def run_action(action: RetuneAction, request: RetuneRequest) -> str:
    """Carry out `action` for `request`; returns what was created (message or job id)."""
    if isinstance(action, PubSubRetune):
        return publish_request(action, request)
    if isinstance(action, VertexPipelineRetune):
        return submit_vertex_pipeline(action, request)
    return create_kfp_run(action, request)


def publish_request(action: PubSubRetune, request: RetuneRequest) -> str:
    """Publish the request JSON; attributes let a subscription filter by model or action.
    Honours PUBSUB_EMULATOR_HOST like every Pub/Sub client."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    try:
        topic = publisher.topic_path(action.project, action.topic)
        future = publisher.publish(
            topic,
            request.to_json(),
            model=request.model,
            detector=request.detector,
            action=action.name,
        )
        message_id: str = future.result(timeout=60)
    except Exception as error:
        msg = f"retune action {action.name!r}: publishing to {action.topic}: {error}"
        raise RetuneActionError(msg) from error
    finally:
        publisher.transport.close()
    return message_id


def render_parameters(
    values: dict[str, Any], request: RetuneRequest, **extra: str
) -> dict[str, Any]:
    return {name: request.render(value, **extra) for name, value in values.items()}


def submit_vertex_pipeline(action: VertexPipelineRetune, request: RetuneRequest) -> str:
    """Submit a Vertex AI PipelineJob from `template_path` (does not wait for it to run)."""
    try:
        # by name: a static import would make mypy analyse the typed aiplatform package and
        # with it the google.cloud namespace, hiding the untyped Pub/Sub client beside it
        aiplatform: Any = importlib.import_module("google.cloud.aiplatform")
        credentials: Any = importlib.import_module("google.auth.credentials")
    except ImportError as error:
        msg = "the vertex_pipeline action needs the retune extra: pip install 'lookout[retune]'"
        raise RetuneActionError(msg) from error
    extra = {"project": action.project, "location": action.location}
    init: dict[str, Any] = {"project": action.project, "location": action.location}
    if action.api_endpoint is not None:
        init.update(api_endpoint=action.api_endpoint, api_transport="rest")
        if action.api_endpoint.startswith("http://"):
            # plain HTTP is only ever a local stand-in or emulator: send no credentials there
            init["credentials"] = credentials.AnonymousCredentials()
    try:
        aiplatform.init(**init)
        job = aiplatform.PipelineJob(
            display_name=request.render(action.display_name, **extra),
            template_path=action.template_path,
            pipeline_root=action.pipeline_root,
            parameter_values=render_parameters(action.parameter_values, request, **extra),
            enable_caching=action.enable_caching,
            project=action.project,
            location=action.location,
        )
        job.submit(service_account=action.service_account)
    except Exception as error:
        msg = f"retune action {action.name!r}: submitting the Vertex AI pipeline: {error}"
        raise RetuneActionError(msg) from error
    return str(job.resource_name)


def create_kfp_run(action: KfpRetune, request: RetuneRequest) -> str:
    """Create a run from a compiled package on a Kubeflow Pipelines endpoint."""
    try:
        import kfp
    except ImportError as error:
        msg = "the kfp action needs the retune extra: pip install 'lookout[retune]'"
        raise RetuneActionError(msg) from error
    try:
        with warnings.catch_warnings():
            # the client warns on every construction that it needs a KFP v2 backend
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(host=action.host, namespace=action.namespace)
        run = client.create_run_from_pipeline_package(
            action.package_path,
            arguments=render_parameters(action.parameters, request),
            run_name=request.render(action.run_name),
            experiment_id=action.experiment_id,
            namespace=action.namespace,
        )
    except Exception as error:
        msg = f"retune action {action.name!r}: creating the Kubeflow run: {error}"
        raise RetuneActionError(msg) from error
    return str(run.run_id)


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
