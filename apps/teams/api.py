from __future__ import annotations

from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from apps.core.fields import StrictBooleanField, StrictCharField, parse, says

from . import cli_login, services
from .filters import TokenFilter
from .models import ApiToken, Invitation, JoinRequest, Membership, Role, Team
from .permissions import PrincipalMixin, require
from .principal import principal_of


class TeamSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Team
        fields = ["slug", "name", "created_at", "role"]
        read_only_fields = ["created_at", "role"]

    def get_role(self, team: Team) -> str | None:
        return principal_of(self.context["request"]).role(team)


class TeamWriteSerializer(serializers.Serializer):
    slug = StrictCharField(max_length=30)
    name = StrictCharField(max_length=100)


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    email = serializers.CharField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "email", "role", "created_at"]
        read_only_fields = ["email", "created_at"]


class MemberPublicSerializer(MemberSerializer):
    class Meta(MemberSerializer.Meta):
        fields = ["username", "role", "created_at"]


ROLE_CHOICE = {"invalid_choice": f"Must be one of {', '.join(Role.values)}."}


class MemberWriteSerializer(serializers.Serializer):
    username = StrictCharField(max_length=254, help_text="Username or email address")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER, error_messages=ROLE_CHOICE)


def admin_team(request, slug: str, what: str) -> Team:
    """The team the URL names (404 when the principal may not see it), if it is its admin (403 otherwise)."""
    principal = principal_of(request)
    team = get_object_or_404(principal.teams(), slug=slug)
    require(principal, team, Role.ADMIN, what)
    return team


class TeamViewSet(PrincipalMixin, viewsets.ModelViewSet):
    serializer_class = TeamSerializer
    lookup_field = "slug"
    lookup_value_regex = r"[a-z0-9-]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no real user
            return Team.objects.none()
        return self.principal.teams().order_by("slug")

    @extend_schema(request=TeamWriteSerializer, responses=TeamSerializer)
    def create(self, request, *args, **kwargs):
        if self.principal.is_scoped:
            raise PermissionDenied("A team-scoped token cannot create teams.")
        body = parse(TeamWriteSerializer, request.data)
        team = services.team_create(actor=request.user, slug=body["slug"], name=body["name"])
        return Response(TeamSerializer(team, context={"request": request}).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TeamWriteSerializer, responses=TeamSerializer)
    def partial_update(self, request, *args, **kwargs):
        team = self.get_object()
        self.require_role(team, Role.ADMIN, "change the team")
        body = parse(TeamWriteSerializer, request.data, partial=True)
        services.team_update(actor=request.user, team=team, name=body.get("name", team.name))
        return Response(TeamSerializer(team, context={"request": request}).data)

    def destroy(self, request, *args, **kwargs):
        team = self.get_object()
        self.require_role(team, Role.OWNER, "delete the team")
        services.team_delete(actor=self.principal, team=team)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=MemberWriteSerializer, responses=MemberSerializer(many=True))
    @action(detail=True, methods=["get", "post"])
    def members(self, request, slug=None):
        team = self.get_object()
        if request.method == "POST":
            self.require_role(team, Role.ADMIN, "add members")
            body = parse(MemberWriteSerializer, request.data)
            m = services.membership_add(actor=self.principal, team=team, username=body["username"], role=body["role"])
            return Response(MemberSerializer(m).data, status=status.HTTP_201_CREATED)
        qs = team.memberships.select_related("user").order_by("user__username")
        page = self.paginate_queryset(qs)
        # Addresses are for the team's admins (who invite and manage people); other readers see usernames.
        serializer = MemberSerializer if self.principal.can(team, Role.ADMIN) else MemberPublicSerializer
        return self.get_paginated_response(serializer(page, many=True).data)

    @extend_schema(request=MemberWriteSerializer, responses=MemberSerializer)
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<username>[^/]+)")
    def member(self, request, slug=None, username=None):
        team = self.get_object()
        m = get_object_or_404(Membership.objects.select_related("user", "team"), team=team, user__username=username)
        self.require_role(team, Role.ADMIN, "manage members")
        if request.method == "DELETE":
            services.membership_remove(actor=self.principal, membership=m)
            return Response(status=status.HTTP_204_NO_CONTENT)
        body = parse(MemberWriteSerializer, request.data, partial=True)
        if "role" not in body:
            raise ValidationError({"role": ["Required: one of viewer, member, admin, owner."]})
        services.membership_change(actor=self.principal, membership=m, role=body["role"])
        return Response(MemberSerializer(m).data)


class InvitationSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", read_only=True)
    state = serializers.CharField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    accepted_by = serializers.CharField(source="accepted_by.username", default=None, read_only=True)

    class Meta:
        model = Invitation
        fields = ["id", "team", "email", "role", "state", "created_by", "created_at", "expires_at", "accepted_by"]


def _an_address(value: str) -> None:
    try:
        validate_email(value)
    except DjangoValidationError as exc:
        raise serializers.ValidationError("Required: an email address.") from exc


class InvitationWriteSerializer(serializers.Serializer):
    email = StrictCharField(validators=[_an_address], error_messages=says("Required: an email address."))
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER, error_messages=ROLE_CHOICE)


class JoinRequestSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", read_only=True)
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = JoinRequest
        fields = ["id", "team", "user", "message", "state", "role", "created_at", "decided_at"]


class JoinRequestWriteSerializer(serializers.Serializer):
    team = StrictCharField()
    message = StrictCharField(required=False, allow_blank=True)


class JoinDecisionSerializer(serializers.Serializer):
    approve = StrictBooleanField()
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class TeamInvitationsView(APIView):
    """A team's invitations (admins): list, and invite an address; the link is in the answer once, and mailed."""

    @extend_schema(responses=InvitationSerializer(many=True), operation_id="team_invitations_list")
    def get(self, request, slug: str):
        team = admin_team(request, slug, "manage invitations")
        qs = team.invitations.select_related("team", "created_by", "accepted_by")[:200]
        return Response(InvitationSerializer(qs, many=True).data)

    @extend_schema(request=InvitationWriteSerializer, responses={201: InvitationSerializer}, operation_id="team_invite")
    def post(self, request, slug: str):
        team = admin_team(request, slug, "manage invitations")
        body = parse(InvitationWriteSerializer, request.data)
        invitation, path = services.invitation_create(
            actor=principal_of(request), team=team, email=body["email"], role=body["role"]
        )
        data = InvitationSerializer(invitation).data
        data["url"] = request.build_absolute_uri(path)  # shown once; only a hash of it is kept
        return Response(data, status=status.HTTP_201_CREATED)


class TeamInvitationView(APIView):
    @extend_schema(responses={204: None}, operation_id="team_invitation_revoke")
    def delete(self, request, slug: str, pk: int):
        team = admin_team(request, slug, "revoke invitations")
        services.invitation_revoke(actor=request.user, invitation=get_object_or_404(Invitation, team=team, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class JoinRequestsView(PrincipalMixin, APIView):
    """Ask to join a team by its slug (any signed-in user); your own requests. A person's own business, not a
    team's: a team-scoped token acts for its team only and is refused here."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.principal.is_scoped:
            raise PermissionDenied("A team-scoped token acts for its team only; use a personal token.")

    @extend_schema(responses=JoinRequestSerializer(many=True), operation_id="join_requests_mine")
    def get(self, request):
        qs = JoinRequest.objects.filter(user=request.user).select_related("team", "user")[:100]
        return Response(JoinRequestSerializer(qs, many=True).data)

    @extend_schema(request=JoinRequestWriteSerializer, responses={201: JoinRequestSerializer}, operation_id="join_ask")
    def post(self, request):
        body = parse(JoinRequestWriteSerializer, request.data)
        req = services.join_request_create(user=request.user, team_slug=body["team"], message=body.get("message", ""))
        return Response(JoinRequestSerializer(req).data, status=status.HTTP_201_CREATED)


class TeamJoinRequestsView(APIView):
    @extend_schema(responses=JoinRequestSerializer(many=True), operation_id="team_join_requests_list")
    def get(self, request, slug: str):
        team = admin_team(request, slug, "see join requests")
        qs = team.join_requests.select_related("team", "user")[:200]
        return Response(JoinRequestSerializer(qs, many=True).data)


class TeamJoinDecisionView(APIView):
    @extend_schema(request=JoinDecisionSerializer, responses=JoinRequestSerializer, operation_id="team_join_decide")
    def post(self, request, slug: str, pk: int):
        team = admin_team(request, slug, "decide join requests")
        body = parse(JoinDecisionSerializer, request.data)
        req = get_object_or_404(JoinRequest.objects.select_related("team", "user"), team=team, pk=pk)
        services.join_request_decide(
            actor=principal_of(request), request=req, approve=body["approve"], role=body["role"]
        )
        return Response(JoinRequestSerializer(req).data)


class TokenSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", default=None, allow_null=True, help_text="null: a personal token")
    role = serializers.ChoiceField(choices=Role.choices, allow_blank=True, help_text="empty: a personal token")
    user = serializers.CharField(source="user.username")
    active = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "user",
            "team",
            "role",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "active",
        ]
        read_only_fields = fields

    def get_active(self, token: ApiToken) -> bool:
        return token.is_active()


class TokenWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    team = serializers.CharField(required=False, allow_null=True)
    role = serializers.ChoiceField(choices=Role.choices, required=False, allow_blank=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class TokenViewSet(
    PrincipalMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """API tokens. The secret is returned once, by create; only its hash is stored. DELETE revokes."""

    filterset_class = TokenFilter

    serializer_class = TokenSerializer
    throttle_scope = "auth"

    def get_throttles(self):
        from rest_framework.throttling import ScopedRateThrottle

        return [ScopedRateThrottle()] if self.action == "create" else []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no real user
            return ApiToken.objects.none()
        return services.tokens_manageable_by(self.principal).order_by("-created_at", "-id")

    @extend_schema(
        request=TokenWriteSerializer,
        responses=inline_serializer(
            "TokenCreated", {"token": serializers.CharField(), "id": serializers.IntegerField()}
        ),
    )
    def create(self, request, *args, **kwargs):
        body = TokenWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        team = None
        if data.get("team"):
            team = self.principal.teams().filter(slug=data["team"]).first()
            if team is None:
                raise ValidationError({"team": ["Required: the slug of a team you belong to."]})
            self.require_role(team, Role.ADMIN, "create team tokens")
        token, secret = services.token_create(
            actor=self.principal,
            name=data["name"],
            team=team,
            role=data.get("role") or "",
            expires_at=data.get("expires_at"),
        )
        return Response({**TokenSerializer(token).data, "token": secret}, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        services.token_revoke(actor=request.user, token=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenRequest(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, style={"input_type": "password"})


class ObtainTokenView(APIView):
    """Exchange a username and password for an API token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(
        request=TokenRequest,
        responses=inline_serializer(
            "TokenResponse",
            {"token": serializers.CharField(), "expires_at": serializers.DateTimeField(allow_null=True)},
        ),
    )
    def post(self, request):
        body = TokenRequest(data=request.data)
        body.is_valid(raise_exception=True)
        user = authenticate(request, username=body.validated_data["username"], password=body.validated_data["password"])
        if user is None or not user.is_active:
            return Response(
                {"non_field_errors": ["Unable to log in with the given username and password."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        # A named, audited, expiring token like any other: the user's token list shows it and can revoke it.
        token, secret = services.login_token_create(user=user, name="api login", source="api")
        return Response({"token": secret, "expires_at": token.expires_at.isoformat() if token.expires_at else None})


class CliLoginStartView(APIView):
    """Start a browser sign-in for the command-line client (``servectl login --browser``)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(
        operation_id="auth_cli_login_start",
        request=None,
        responses={
            201: inline_serializer(
                "CliLoginStarted",
                {
                    "id": serializers.CharField(),
                    "verify_url": serializers.URLField(),
                    "user_code": serializers.CharField(),
                    "poll_secret": serializers.CharField(),
                    "expires_in": serializers.IntegerField(),
                    "interval": serializers.IntegerField(),
                },
            )
        },
    )
    def post(self, request):
        # nothing the caller says is shown to the person who allows it; where it came from is
        started = cli_login.start(client_address=request.META.get("REMOTE_ADDR", ""))
        return Response(
            {
                "id": started.id,
                "verify_url": request.build_absolute_uri(f"/cli-login/{started.id}/"),
                "user_code": started.user_code,
                "poll_secret": started.poll_secret,
                "expires_in": started.expires_in,
                "interval": 2,
            },
            status=status.HTTP_201_CREATED,
        )


class CliLoginCollectRequest(serializers.Serializer):
    poll_secret = serializers.CharField(max_length=100)


class CliLoginCollectView(APIView):
    """Collect the token once the person allowed the sign-in: 202 while pending, 410 when gone or denied."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_cli_login_collect",
        request=CliLoginCollectRequest,
        responses={
            200: inline_serializer(
                "CliLoginToken",
                {"token": serializers.CharField(), "expires_at": serializers.DateTimeField(allow_null=True)},
            ),
            202: inline_serializer("CliLoginPending", {"detail": serializers.CharField()}),
            410: inline_serializer("CliLoginGone", {"detail": serializers.CharField()}),
        },
    )
    def post(self, request, request_id: str):
        body = CliLoginCollectRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            result = cli_login.collect(request_id=request_id, poll_secret=body.validated_data["poll_secret"])
        except cli_login.CliLoginGone as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_410_GONE)
        if result is None:
            return Response({"detail": "Waiting for you to allow it in the browser."}, status=status.HTTP_202_ACCEPTED)
        secret, expires_at = result
        return Response({"token": secret, "expires_at": expires_at.isoformat() if expires_at else None})
