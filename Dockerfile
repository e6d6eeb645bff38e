# Image for the local runner (python -m consumers.local) used by docker-compose.yml.
# Runtime dependencies only; the code runs from /app via PYTHONPATH so that
# devenv finds schemas/ next to it (`python -m devenv create`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY spanstream ./spanstream
COPY consumers ./consumers
COPY devenv ./devenv
COPY schemas ./schemas

USER nobody
CMD ["python", "-m", "consumers.local"]
