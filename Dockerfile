# One image for the backend and the worker: they differ only in the command (see docker-compose.yml).

# Build stage: wheels for scalr_queue (this repository) and the backend's requirements.
FROM python:3.11-slim AS build
WORKDIR /build
COPY pyproject.toml README.md ./
COPY scalr_queue ./scalr_queue
COPY template-app/backend/requirements.txt ./requirements.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels . -r requirements.txt

# Final stage: no compilers, no build files; a non-root user; unbuffered output so logs arrive as written.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 app
WORKDIR /app
COPY --chown=app:app template-app/backend/src ./src
USER app
EXPOSE 8000
# Exec form: the process is PID 1's child directly, so SIGTERM reaches Python (and the worker's graceful stop).
CMD ["uvicorn", "src.main:app", "--host", "0.0.0.0", "--port", "8000"]
