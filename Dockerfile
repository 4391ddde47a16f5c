# One image for every platform process (web, ingest, worker, beat, migrations); see helm/.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY fleet_protocol fleet_protocol
COPY smartpark smartpark
COPY model_store model_store
COPY compression compression
COPY edge_agent edge_agent
RUN pip install '.[server]'

COPY manage.py ./
COPY platform platform
RUN useradd --uid 10001 --user-group --home-dir /app --no-create-home fleet \
    && mkdir -p /app/var && chown fleet:fleet /app/var

USER 10001
EXPOSE 8000
CMD ["gunicorn", "--pythonpath", "platform", "fleet_server.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
