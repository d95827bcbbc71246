from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from apps.alerts.api import AlertRuleViewSet, IncidentViewSet, WasteReportView, WebhookDetailView, WebhookListView
from apps.applications.api import ApplicationViewSet, RouteGrantsView, RouteGrantView, ServeConfigFileView
from apps.audit.api import AuditEventViewSet
from apps.catalog.api import ModelEntryViewSet
from apps.compaction.api import CompactionPlanViewSet
from apps.dashboard.accounts import RateLimitedLoginView, signup, verify_email, verify_email_resend
from apps.dashboard.pages.home import favicon
from apps.deploys.api import ClusterViewSet, SyncRunViewSet
from apps.deploys.ray_api import NotServedView, ScaleView, ServeApplicationsView, VersionView
from apps.metrics.api import ClusterGpusView, MetricsView
from apps.quotas.api import QuotaRequestViewSet, QuotaViewSet
from apps.rollouts.api import ApplicationRolloutsView, RolloutViewSet
from apps.sso import views as sso_views
from apps.teams.api import (
    CliLoginCollectView,
    CliLoginStartView,
    JoinRequestsView,
    ObtainTokenView,
    TeamInvitationsView,
    TeamInvitationView,
    TeamJoinDecisionView,
    TeamJoinRequestsView,
    TeamViewSet,
    TokenViewSet,
)

router = DefaultRouter()
router.register("teams", TeamViewSet, basename="team")
router.register("clusters", ClusterViewSet, basename="cluster")
router.register("quotas", QuotaViewSet, basename="quota")
router.register("applications", ApplicationViewSet, basename="application")
router.register("sync-runs", SyncRunViewSet, basename="syncrun")
router.register("quota-requests", QuotaRequestViewSet, basename="quotarequest")
router.register("tokens", TokenViewSet, basename="token")
router.register("audit-events", AuditEventViewSet, basename="auditevent")
router.register("compaction/plans", CompactionPlanViewSet, basename="compactionplan")
router.register("models", ModelEntryViewSet, basename="modelentry")
router.register("incidents", IncidentViewSet, basename="incident")
router.register("alert-rules", AlertRuleViewSet, basename="alertrule")
router.register("rollouts", RolloutViewSet, basename="rollout")

urlpatterns = [
    # Browsers ask for /favicon.ico on pages that name no icon (a JSON answer, an error page): the same icon.
    path("favicon.ico", favicon, name="favicon"),
    path("api/v1/auth/token/", ObtainTokenView.as_view(), name="api-token"),
    path("api/v1/auth/cli-login/", CliLoginStartView.as_view(), name="api-cli-login"),
    path("api/v1/auth/cli-login/<str:request_id>/token/", CliLoginCollectView.as_view(), name="api-cli-login-token"),
    path("api/v1/metrics/", MetricsView.as_view(), name="metrics"),
    path("api/v1/clusters/<int:pk>/gpus/", ClusterGpusView.as_view(), name="cluster-gpus"),
    # Ray's own Serve REST API for one team on one cluster: `serve deploy ... --address <base>/ray/<team>/<cluster>`.
    path("ray/<slug:team>/<str:cluster>/api/version", VersionView.as_view(), name="ray-version"),
    path("ray/<slug:team>/<str:cluster>/api/ray/version", VersionView.as_view(), name="ray-ray-version"),
    path(
        "ray/<slug:team>/<str:cluster>/api/serve/applications/",
        ServeApplicationsView.as_view(),
        name="ray-serve-applications",
    ),
    path(
        "ray/<slug:team>/<str:cluster>/api/v1/applications/<str:application>/deployments/<str:deployment>/scale",
        ScaleView.as_view(),
        name="ray-scale",
    ),
    path("ray/<slug:team>/<str:cluster>/<path:rest>", NotServedView.as_view(), name="ray-not-served"),
    path("api/v1/teams/<slug:slug>/serve-config/", ServeConfigFileView.as_view(), name="team-serve-config"),
    path("api/v1/teams/<slug:slug>/route-grants/", RouteGrantsView.as_view(), name="team-route-grants"),
    path("api/v1/teams/<slug:slug>/route-grants/<int:pk>/", RouteGrantView.as_view(), name="team-route-grant"),
    path("api/v1/teams/<slug:slug>/webhooks/", WebhookListView.as_view(), name="team-webhooks"),
    path("api/v1/teams/<slug:slug>/webhooks/<int:pk>/", WebhookDetailView.as_view(), name="team-webhook"),
    path("api/v1/teams/<slug:slug>/waste-report/", WasteReportView.as_view(), name="team-waste-report"),
    path("api/v1/teams/<slug:slug>/invitations/", TeamInvitationsView.as_view(), name="team-invitations"),
    path("api/v1/teams/<slug:slug>/invitations/<int:pk>/", TeamInvitationView.as_view(), name="team-invitation"),
    path("api/v1/teams/<slug:slug>/join-requests/", TeamJoinRequestsView.as_view(), name="team-join-requests"),
    path(
        "api/v1/teams/<slug:slug>/join-requests/<int:pk>/decide/",
        TeamJoinDecisionView.as_view(),
        name="team-join-decide",
    ),
    path("api/v1/applications/<int:pk>/rollouts/", ApplicationRolloutsView.as_view(), name="application-rollouts"),
    path("api/v1/join-requests/", JoinRequestsView.as_view(), name="join-requests"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/signup/", signup, name="signup"),
    path("accounts/verify-email/", verify_email_resend, name="verify_email_resend"),
    path("accounts/verify-email/<str:token>/", verify_email, name="verify_email"),
    path("accounts/logout/", sso_views.logout_view, name="logout"),
    path("accounts/oidc/login/", sso_views.start, name="sso_login"),
    path("accounts/oidc/callback/", sso_views.callback, name="sso_callback"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("apps.dashboard.urls")),
]
