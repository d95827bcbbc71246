# One image for web, worker and beat (and the demo Ray nodes, which need the same examples/ and Ray version).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONTROLPLANE_VAR_DIR=/var/lib/controlplane PYTHONPATH=/app

RUN groupadd --system --gid 999 app && useradd --system --uid 999 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app

COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
COPY apps ./apps
COPY workers ./workers
COPY examples ./examples
RUN pip install . && pip uninstall -y serve-control-plane
COPY manage.py ./
COPY templates ./templates
COPY static ./static

# Static files are collected at build time and served by whitenoise.
RUN mkdir -p /var/lib/controlplane /var/run/controlplane-metrics \
    && DEBUG=false SECRET_KEY=build-only-not-secret FIELD_ENCRYPTION_KEYS=YnVpbGQtb25seS1ub3Qtc2VjcmV0LTAxMjM0NTY3ODk= \
       ALLOWED_HOSTS=build python manage.py collectstatic --noinput \
    && chown -R app:app /var/lib/controlplane /var/run/controlplane-metrics

USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
# The same entrypoints as `make run`: gunicorn for web; `celery -A controlplane worker|beat` for the others.
CMD ["gunicorn", "--config", "python:controlplane.gunicorn", "controlplane.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--timeout", "60"]
