# The stepwise image. One image serves every stepwise container of docker-compose.yml: the REST API
# (`stepwise serve`), the teacher simulator (`stepwise sim`) and the Ray head and worker nodes (`ray start`),
# so the driver and the Ray workers always run the same Python, Ray and project code.
#
#   docker build -t stepwise .                                   # extras: ray
#   docker build --build-arg EXTRAS=ray,train -t stepwise .      # + the student trainer (torch: a much larger image)
#
# EXTRAS are extras of pyproject.toml. `ray` is needed by the compose stack; the test extra never goes in.
# Ray is installed as ray[default]: the dashboard, the job API and the per-node health endpoints of the compose
# healthchecks come with it.

FROM python:3.11-slim AS build
ARG EXTRAS=ray
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies first, in a layer of their own, read from pyproject.toml: editing the source does not
# download them again.
COPY pyproject.toml README.md ./
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = [e for e in os.environ['EXTRAS'].split(',') if e]; print('\n'.join(p['dependencies'] + [r for e in extras for r in p['optional-dependencies'][e]]))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt "ray[default]"
COPY stepwise ./stepwise
COPY pipeline ./pipeline
COPY prompts ./prompts
COPY storage ./storage
COPY api ./api
RUN pip install --no-deps . && pip check

FROM python:3.11-slim
# a fixed uid, so that files in the shared corpus volume have one owner whichever container wrote them
RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin stepwise \
    && mkdir -p /data/corpus /data/jobs \
    && chown stepwise:stepwise /data/corpus
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0
USER stepwise
WORKDIR /data
EXPOSE 8000
# the slim image has no curl: Python asks the API's unauthenticated liveness endpoint
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Without STEPWISE_API_TOKEN `stepwise serve` listens on 127.0.0.1 only; compose passes the token.
CMD ["stepwise", "serve", "--host", "0.0.0.0", "--port", "8000", "--corpus", "/data/corpus"]
