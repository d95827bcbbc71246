"""Writes of teams and their people, by subject: teams, memberships, tokens, invitations and join requests,
verified addresses. Callers import from here."""

from .emails import (
    EMAIL_LINK_DAYS,
    EMAIL_SALT,
    email_is_verified,
    email_mark_verified,
    email_verification_send,
    email_verify,
)
from .invitations import (
    INVITATION_SALT,
    InvitationRefused,
    invitation_accept,
    invitation_check,
    invitation_create,
    invitation_revoke,
    join_request_create,
    join_request_decide,
)
from .memberships import membership_add, membership_change, membership_remove
from .teams import team_create, team_delete, team_update
from .tokens import issue_token, login_token_create, token_create, token_revoke, tokens_manageable_by

__all__ = [
    "EMAIL_LINK_DAYS",
    "EMAIL_SALT",
    "INVITATION_SALT",
    "InvitationRefused",
    "email_is_verified",
    "email_mark_verified",
    "email_verification_send",
    "email_verify",
    "invitation_accept",
    "invitation_check",
    "invitation_create",
    "invitation_revoke",
    "issue_token",
    "join_request_create",
    "join_request_decide",
    "login_token_create",
    "membership_add",
    "membership_change",
    "membership_remove",
    "team_create",
    "team_delete",
    "team_update",
    "token_create",
    "token_revoke",
    "tokens_manageable_by",
]
