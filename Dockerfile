# vipd in a container. The base is a build argument so that machines without a registry can
# build on a locally imported base image (see docs); users get the slim Python image.
ARG BASE=python:3.12-slim
FROM ${BASE}

WORKDIR /opt/vipd
COPY pyproject.toml README.md ./
COPY vipd ./vipd
RUN python3 -m venv /opt/vipd/venv && /opt/vipd/venv/bin/pip install --no-cache-dir .
ENV PATH=/opt/vipd/venv/bin:$PATH

# Needs --cap-add NET_ADMIN --cap-add NET_RAW and the host's (or a shared) network namespace.
HEALTHCHECK --interval=5s --timeout=3s CMD ["vipctl", "status"]
ENTRYPOINT ["vipd"]
CMD ["run", "-c", "/etc/vipd/vipd.toml"]
