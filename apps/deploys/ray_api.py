"""Ray's own Serve REST API, per team and cluster: ``serve deploy``, ``serve status``, ``serve config``,
``serve shutdown`` and ``ServeSubmissionClient`` work unchanged against ``/ray/<team>/<cluster>``.

Ray's API is whole-cluster: a PUT replaces every app and deletes the ones it does not name. Here the same calls
act on one team's view of one cluster: a PUT is the team's Serve config file applied with prune (validated,
admitted against the quota, versioned, audited, merged with the other teams' apps by the usual push), a GET shows
the team's apps only, under the names the team used, with the statuses Ray reports, and a DELETE removes the
team's apps only. Another team's apps are neither shown nor touched, whatever the request says.

Authentication is Ray's token authentication (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``): the team's API token
as ``Authorization: Bearer <token>``. Errors answer as Ray's dashboard does: plain text, Ray's status codes, and
Ray's words where Ray has them (401 "Unauthorized: Missing authentication token", 403 "Forbidden: Invalid
authentication token"), so Ray's CLI prints them as it would print Ray's own.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.applications import serve_files
from apps.applications.models import Application
from apps.applications.services import application_delete, application_scale, in_team_namespace
from apps.clusters.models import Cluster
from apps.core.errors import Conflict, PayloadTooLarge, error_fields
from apps.teams.authentication import RayTokenAuthentication
from apps.teams.models import Role, Team
from apps.teams.permissions import PrincipalMixin, require
from workers.clients.ray_dashboard import RayRejected, RayUnavailable

from .transport import transport_for

log = logging.getLogger(__name__)

# The Ray version whose dashboard API this answers as (its CLI checks the version before anything else).
SPEAKS_RAY = "2.60.0"
SOURCE = "ray-api"

# Ray's status of an app, where the control plane knows better than Ray's last answer.
PUSHING = "DEPLOYING"


def text(status: int, body: str) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


class RayView(PrincipalMixin, APIView):
    """A team's view of one cluster, reached as ``/ray/<team>/<cluster>/``, answering the way Ray's dashboard
    does. Not in the OpenAPI schema: its contract is Ray's."""

    authentication_classes = [RayTokenAuthentication]
    permission_classes: list = []
    schema = None
    needed = Role.VIEWER

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not self.principal.is_authenticated:
            raise exceptions.NotAuthenticated()
        self.team, self.cluster = self._scope(kwargs["team"], kwargs["cluster"])

    def _scope(self, slug: str, name: str) -> tuple[Team, Cluster]:
        team = self.principal.teams().filter(slug=slug).first()
        cluster = Cluster.objects.filter(name=name).first() or (
            Cluster.objects.filter(pk=int(name)).first() if name.isdigit() else None
        )
        if team is None or cluster is None:
            raise Http404(f"No team {slug!r} with a cluster {name!r} that this token may use.")
        return team, cluster

    def handle_exception(self, exc: Exception) -> HttpResponse:
        if isinstance(exc, exceptions.NotAuthenticated):
            return text(401, "Unauthorized: Missing authentication token")
        if isinstance(exc, exceptions.AuthenticationFailed):
            return text(403, "Forbidden: Invalid authentication token")
        if isinstance(exc, exceptions.Throttled):
            return text(429, str(exc.detail))
        if isinstance(exc, DjangoPermissionDenied | exceptions.PermissionDenied):
            return text(403, f"Forbidden: {exc}")
        if isinstance(exc, Http404):
            return text(404, str(exc) or "Not found.")
        if isinstance(exc, PayloadTooLarge):
            return text(413, str(exc))
        if isinstance(exc, DjangoValidationError):
            return text(400, refusal(exc))
        if isinstance(exc, Conflict):
            return text(409, "; ".join(f"{k}: {m}" for k, ms in error_fields(exc).items() for m in ms) or str(exc))
        if isinstance(exc, exceptions.MethodNotAllowed):
            return text(405, str(exc.detail))
        raise exc


def refusal(exc: DjangoValidationError) -> str:
    """A refused config as Ray's CLI prints a 400: every reason on its own line, named by its place in the file."""
    lines = [f"  {field}: {m}" for field, messages in error_fields(exc).items() for m in messages]
    return "The config was refused; nothing was changed:\n" + "\n".join(lines)


class VersionView(RayView):
    """``/api/version`` and ``/api/ray/version``, which Ray's SubmissionClient and Serve CLI check first."""

    def get(self, request: Request, **kwargs: Any) -> JsonResponse:
        return JsonResponse({"version": "4", "ray_version": SPEAKS_RAY, "ray_commit": "", "session_name": ""})


class ServeApplicationsView(RayView):
    def get(self, request: Request, **kwargs: Any) -> HttpResponse:
        try:
            seen = transport_for(self.cluster).serve_status()
        except (RayUnavailable, RayRejected) as exc:
            return text(503, f"Ray cluster {self.cluster.name} is not answering: {exc}")
        return JsonResponse(team_view(self.team, self.cluster, seen))

    def put(self, request: Request, **kwargs: Any) -> HttpResponse:
        require(self.principal, self.team, Role.MEMBER, "deploy applications")
        document = serve_files.parse_document(request.body, request.content_type or "application/json")
        if isinstance(document, dict):
            document = in_namespace(self.team, document)
        result = serve_files.apply_file(
            actor=request.user, team=self.team, cluster=self.cluster, document=document, prune=True, source=SOURCE
        )
        log.info("ray-api put team=%s cluster=%s changed=%s", self.team.slug, self.cluster.name, result["changed"])
        return text(200, "")

    def delete(self, request: Request, **kwargs: Any) -> HttpResponse:
        require(self.principal, self.team, Role.MEMBER, "delete applications")
        for app in Application.objects.filter(team=self.team, cluster=self.cluster, deleted_at__isnull=True):
            application_delete(actor=request.user, application=app, source=SOURCE)
        return text(200, "")


class NotServedView(RayView):
    """Everything else of Ray's dashboard API (jobs, actors, nodes, logs, metrics, packages): not served here, since
    it shows or acts on the whole cluster. Said plainly, after the token is checked, rather than a bare 404."""

    def _refuse(self, request: Request, rest: str = "", **kwargs: Any) -> HttpResponse:
        return text(
            404,
            f"Not served here: /{rest} is part of Ray's dashboard API that shows or acts on the whole cluster. This "
            f"address is team {self.team.slug}'s view of Serve on {self.cluster.name}: GET, PUT and DELETE "
            "/api/serve/applications/, /api/version, and the external scaler's "
            "/api/v1/applications/<app>/deployments/<deployment>/scale.",
        )

    get = post = put = delete = patch = _refuse


class ScaleView(RayView):
    """Ray's external scaler endpoint for an app with ``external_scaler_enabled``: the target is admitted against
    the team's quota and caps, versioned and audited (``application_scale``), then passed to Ray, which scales at
    once; the push of the new revision keeps Ray's config in step. Answers in Ray's JSON shape."""

    def post(self, request: Request, application: str, deployment: str, **kwargs: Any) -> JsonResponse:
        require(self.principal, self.team, Role.MEMBER, "scale deployments")
        app = (
            Application.objects.filter(team=self.team, cluster=self.cluster, name=application, deleted_at__isnull=True)
            .select_related("team", "cluster", "current_revision")
            .first()
        )
        if app is None:
            return JsonResponse({"error": "Application or Deployment not found"}, status=404)
        try:
            body = json.loads(request.body or b"{}")
            target = body["target_num_replicas"]
            if isinstance(target, float) and target.is_integer():
                target = int(target)  # 2.0 is a whole number to Ray's ScaleDeploymentRequest too
        except (ValueError, TypeError, KeyError) as exc:
            return JsonResponse({"error": f"Invalid request body: {type(exc).__name__}: {exc}"}, status=400)
        try:
            app = application_scale(
                actor=request.user, application=app, deployment=deployment, target=target, source=SOURCE
            )
        except Http404:
            return JsonResponse({"error": "Application or Deployment not found"}, status=404)
        except DjangoValidationError as exc:
            fields = error_fields(exc)
            reason = "; ".join(m for messages in fields.values() for m in messages)
            status = 412 if "external_scaler_enabled" in fields else 400
            return JsonResponse({"error": reason}, status=status)
        message = "Scaling request received. Deployment will get scaled asynchronously."
        try:
            transport_for(self.cluster).scale(app.serve_name, deployment, target)
        except (RayUnavailable, RayRejected) as exc:
            # Stored and admitted: the push of the new revision scales it once Ray answers.
            log.info("scale of %s/%s not passed to Ray now: %s", app.serve_name, deployment, exc)
            message = "Scaling request stored; Ray will scale the deployment with the next push."
        return JsonResponse({"message": message}, status=200)


def in_namespace(team: Team, document: dict) -> dict:
    """Routes as a Ray user writes them, placed in the team's namespace: a route outside the team's prefixes
    (``/``, ``/fruit``, or none, which Serve reads as ``/``) is served under ``/<team>`` (``/<team>``,
    ``/<team>/fruit``); a route already in the team's namespace, or ``null`` (no HTTP route), is kept. So a config
    from Ray's docs deploys unchanged and ``serve config`` shows where each app answers."""
    apps = document.get("applications")
    if not isinstance(apps, list):
        return document
    out = []
    for app in apps:
        route = app.get("route_prefix", "/") if isinstance(app, dict) else None
        if isinstance(route, str) and route.startswith("/") and not in_team_namespace(team, route):
            app = {**app, "route_prefix": f"/{team.slug}{route.rstrip('/')}" if route != "/" else f"/{team.slug}"}
        out.append(app)
    return {**document, "applications": out}


def team_view(team: Team, cluster: Cluster, seen: dict) -> dict:
    """Ray's Serve details document reduced to the team's apps under the team's names: what Ray reports for each,
    and for an app Ray does not run (yet) what the control plane knows (being pushed, or left out and why)."""
    apps = list(
        Application.objects.filter(team=team, cluster=cluster)
        .select_related("team", "cluster", "current_revision")
        .order_by("name")
    )
    ray_apps = seen.get("applications") or {}
    shown: dict[str, dict] = {}
    for app in apps:
        theirs = ray_apps.get(app.serve_name)
        alive = app.deleted_at is None
        if theirs is None and not alive:
            continue  # deleted and gone from Ray
        if theirs is None:
            shown[app.name] = _not_running(app)
            continue
        detail = _complete(_renamed(theirs, app.serve_name, app.name), app)
        if not alive:
            detail["status"], detail["message"] = "DELETING", "Deleted; the control plane is removing it from Ray."
        elif app.fault_revision_id and app.fault_revision_id == app.current_revision_id:
            detail["message"] = f"Left out of the cluster's config: {app.fault}"
        elif app.current_revision_id != app.deployed_revision_id and detail.get("status") == "RUNNING":
            detail["status"] = PUSHING
            detail["message"] = "A new config is being pushed to Ray."
        shown[app.name] = detail
    names = {a.serve_name: a.name for a in apps}
    controller = seen.get("controller_info") or {}
    if not controller and cluster.kind == Cluster.Kind.KUBERAY and shown:
        # KubeRay's status names no controller; `serve shutdown` takes a missing node id for "no Serve here".
        controller = {"node_id": f"rayservice:{cluster.name}"}
    return {
        "controller_info": controller,
        "proxy_location": seen.get("proxy_location"),
        "http_options": seen.get("http_options"),
        "grpc_options": seen.get("grpc_options"),
        "proxies": seen.get("proxies") or {},
        "applications": shown,
        "target_capacity": None,
        "target_groups": [
            _renamed(g, g.get("app_name", ""), names[g["app_name"]])
            for g in seen.get("target_groups") or []
            if isinstance(g, dict) and g.get("app_name") in names
        ],
    }


def _renamed(detail: dict, serve_name: str, name: str) -> dict:
    """The document with every string that is exactly the cluster-side name replaced by the team's name."""
    if not serve_name or serve_name == name:
        return json.loads(json.dumps(detail))
    return json.loads(json.dumps(detail).replace(json.dumps(serve_name), json.dumps(name)))


def _complete(detail: dict, app: Application) -> dict:
    """Fill what Ray's ApplicationDetails requires and a status source left out (KubeRay's RayService status has
    no route, times or deployment configs), so Ray's CLI can parse every answer. What the source said is kept."""
    deployments = {
        name: {
            "name": name,
            "status": d.get("status") or "UPDATING",
            "status_trigger": d.get("status_trigger") or "UNSPECIFIED",
            "message": d.get("message") or "",
            "deployment_config": d.get("deployment_config") or {"name": name},
            "target_num_replicas": d.get("target_num_replicas") or 0,
            "required_resources": d.get("required_resources") or {},
            "replicas": d.get("replicas") or [],
            **{k: v for k, v in d.items() if k not in _DEPLOYMENT_REQUIRED},
        }
        for name, d in (detail.get("deployments") or {}).items()
        if isinstance(d, dict)
    }
    return {**_not_running(app), **detail, "deployments": deployments}


_DEPLOYMENT_REQUIRED = {
    "name",
    "status",
    "status_trigger",
    "message",
    "deployment_config",
    "target_num_replicas",
    "required_resources",
    "replicas",
}


def _not_running(app: Application) -> dict:
    if app.fault_revision_id and app.fault_revision_id == app.current_revision_id:
        status, message = "DEPLOY_FAILED", f"Left out of the cluster's config: {app.fault}"
    else:
        status, message = PUSHING, "Stored; the control plane is pushing it to Ray."
    return {
        "name": app.name,
        "route_prefix": app.route_prefix or None,
        "docs_path": None,
        "status": status,
        "message": message,
        "last_deployed_time_s": 0,
        "deployed_app_config": None,
        "source": "declarative",
        "deployments": {},
        "external_scaler_enabled": bool(
            (app.current_revision.spec if app.current_revision else {}).get("external_scaler_enabled", False)
        ),
    }
