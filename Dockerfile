# One image for every role of the distributed demo. The default command serves the API; compose.yaml runs
# the workers from the same image with `python -m services.worker general|balanced|heavy`.
# The base image is an argument so that a machine that cannot pull it builds on a stand-in (the tests do).
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The processes run as this user; /app/.local is where the API and workers keep SQLite when no
# DATABASE_URL is set, so it is the one place they may write.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
RUN mkdir .local && chown app:app .local

# The dependencies first, on a placeholder package, so this layer is rebuilt only when pyproject.toml or
# README.md change, not on every code change.
COPY pyproject.toml README.md ./
RUN mkdir -p src/arq_mediator \
    && touch src/arq_mediator/__init__.py \
    && pip install --no-cache-dir ".[services]"

# Then the library itself, replacing the placeholder, and the services, which run from the working directory.
COPY src/ src/
RUN pip install --no-cache-dir --no-deps --force-reinstall .
COPY services/ services/

USER app
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "services.api.app:app", "--host", "0.0.0.0", "--port", "8000"]
