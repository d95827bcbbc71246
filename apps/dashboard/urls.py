from django.urls import path

from apps.alerts import views as alert_views
from apps.catalog import views as catalog_views
from apps.compaction import views as compaction_views
from apps.core import observability
from apps.metrics import views as metrics_views

from . import team_views, views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", observability.healthz, name="healthz"),
    path("readyz", observability.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("charts/", metrics_views.chart, name="chart"),
    path("clusters/<int:pk>/metrics-source/", metrics_views.source_status, name="metrics_source"),
    path("models/", catalog_views.models_page, name="models"),
    path("clusters/", views.cluster_list, name="cluster_list"),
    path("clusters/<int:pk>/", views.cluster_detail, name="cluster_detail"),
    path("clusters/<int:pk>/sync/", views.cluster_sync, name="cluster_sync"),
    path("clusters/<int:pk>/adopt/", views.cluster_adopt, name="cluster_adopt"),
    path("clusters/<int:pk>/unmanaged/remove/", views.cluster_unmanaged_remove, name="cluster_unmanaged_remove"),
    path("clusters/<int:cluster_id>/compaction/", compaction_views.plan_new, name="compaction_new"),
    path("compaction/<int:pk>/", compaction_views.plan_detail, name="compaction_plan"),
    path("compaction/<int:pk>/steps/", compaction_views.plan_steps, name="compaction_steps"),
    path("compaction/<int:pk>/execute/", compaction_views.plan_execute, name="compaction_execute"),
    path("incidents/", alert_views.incident_list, name="incidents"),
    path("incidents/badge/", alert_views.incident_badge, name="incident_badge"),
    path("incidents/<int:pk>/", alert_views.incident_detail, name="incident_detail"),
    path("incidents/<int:pk>/acknowledge/", alert_views.incident_acknowledge, name="incident_acknowledge"),
    path("alert-rules/", alert_views.rules_page, name="alert_rules"),
    path("teams/<slug:slug>/webhooks/", alert_views.team_webhooks, name="team_webhooks"),
    path("teams/<slug:slug>/waste/", alert_views.team_waste, name="team_waste"),
    path("welcome/", team_views.welcome, name="welcome"),
    path("cli-login/<str:request_id>/", team_views.cli_login_page, name="cli_login"),
    path("welcome/deploy-template/", team_views.deploy_template, name="deploy_template"),
    path("account/tokens/", team_views.my_tokens, name="my_tokens"),
    path("audit/", team_views.audit_log, name="audit"),
    path("quota-requests/", team_views.quota_requests_review, name="quota_requests"),
    path("teams/new/", team_views.team_create, name="team_create"),
    path("teams/<slug:slug>/", views.team_detail, name="team_detail"),
    path("teams/<slug:slug>/members/", team_views.members, name="team_members"),
    path("invitations/<str:token>/", team_views.invitation, name="invitation"),
    path("join-team/", team_views.join_team, name="join_team"),
    path("teams/<slug:slug>/quota/", team_views.quota, name="team_quota"),
    path("teams/<slug:slug>/tokens/", team_views.tokens, name="team_tokens"),
    path("teams/<slug:slug>/serve-config/", views.team_serve_config, name="team_serve_config"),
    path("teams/<slug:slug>/delete/", team_views.team_delete, name="team_delete"),
    path("teams/<slug:slug>/apps/status/", views.team_apps_fragment, name="team_apps_fragment"),
    path("apps/new/", views.app_form, name="app_create"),
    path("apps/<int:pk>/", views.app_detail, name="app_detail"),
    path("apps/<int:pk>/status/", views.app_status_fragment, name="app_status_fragment"),
    path("apps/<int:pk>/edit/", views.app_form, name="app_edit"),
    path("apps/<int:pk>/rollback/", views.app_rollback, name="app_rollback"),
    path("apps/<int:pk>/delete/", views.app_delete, name="app_delete"),
    path("apps/<int:pk>/diff/", views.app_diff, name="app_diff"),
]
