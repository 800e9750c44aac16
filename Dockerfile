# One image for every nen-celery process: worker, beat, webhook receiver, Flower, simulator.
# The process is chosen by the command (see docker-compose.yml / Procfile); the default prints help.
# No secret is baked in: NEN_API_KEY, NEN_SIGNING_KEY, NEN_WEBHOOK_SECRET and NEN_SECRETS_KEY come
# from the runtime environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Non-root user; its home is the working directory, so `celery beat` can write its schedule file.
RUN groupadd --system --gid 10001 nen \
    && useradd --system --uid 10001 --gid nen --create-home --home-dir /home/nen --shell /usr/sbin/nologin nen

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src/ ./src/
# The extras of the processes this image runs (pyproject.toml): the standalone receiver (uvicorn,
# Starlette) and its fast path (uvloop, httptools), the nen-celery command, Flower, the simulator.
# A worker or beat alone needs none: `pip install .` is enough for them.
RUN pip install ".[receiver,fast,cli,flower,simulator]" && rm -rf /build

USER nen
WORKDIR /home/nen

# receiver, Flower, simulator
EXPOSE 8000 5555 8700

CMD ["nen-celery", "--help"]
