"""Sign-up and a rate-limited login for the dashboard."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.audit.services import audit_record
from apps.core.errors import error_fields
from apps.teams.services import email_is_verified, email_verification_send, email_verify

LOGIN_FAILURES_ALLOWED = 10
LOGIN_WINDOW_S = 300


def client_ip(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "?")


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="For password resets and invitations.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email address already exists.")
        return email


def create_account(form: SignUpForm, *, verify: bool = True) -> Any:
    """The account a valid sign-up form describes (the sign-up page, an invitation link), audited. Its address is
    only a claim until the link mailed to it is opened (``verify``; an invitation's link proves it instead)."""
    user = form.save()
    audit_record(actor=user, action="user.signup", obj=user, after={"username": user.username}, source="ui")
    if verify:
        email_verification_send(user=user)
    return user


def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    """The link mailed at sign-up: the address is proven to be the account's."""
    try:
        user = email_verify(token)
    except ValidationError as exc:
        return render(request, "registration/verify_email.html", {"error": error_fields(exc)["link"][0]}, status=400)
    return render(request, "registration/verify_email.html", {"verified": user.email})


@login_required
@require_POST
def verify_email_resend(request: HttpRequest) -> HttpResponse:
    if email_is_verified(request.user):
        messages.info(request, f"{request.user.email} is already verified.")
    else:
        email_verification_send(user=request.user)
        messages.success(request, f"A link was mailed to {request.user.email}; open it to verify the address.")
    return redirect("dashboard:my_tokens")


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("dashboard:welcome")
    if not settings.PASSWORD_SIGNUP:
        return render(request, "registration/signup_closed.html", status=403)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = create_account(form)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("dashboard:welcome")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


class RateLimitedLoginView(LoginView):
    """Ten failed attempts per address and username in five minutes, then 429 until the window passes."""

    def _key(self) -> str:
        username = str(self.request.POST.get("username", ""))[:150].lower()
        return f"login-failures:{client_ip(self.request)}:{username}"

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if cache.get(self._key(), 0) >= LOGIN_FAILURES_ALLOWED:
            form = self.get_form()
            form.errors.clear()
            context = self.get_context_data(form=form, locked=True)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = self._key()
        cache.add(key, 0, LOGIN_WINDOW_S)
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, LOGIN_WINDOW_S)
        return super().form_invalid(form)
