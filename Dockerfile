# A minimal ContainerTrail image: wheels are built in a throwaway stage, the final stage has no
# compilers or build tools, and runs as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ctrail ctrail
COPY collector collector
COPY enrich enrich
COPY detectors detectors
COPY sinks sinks
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[kubernetes,gcp]'

FROM python:3.11-slim
# The data directory exists in the image, owned by ctrail: a named volume mounted there starts
# as a copy of it, so the non-root user can write it (an absent mount point would be root's).
RUN useradd --system --uid 10001 --home-dir /var/lib/ctrail --create-home ctrail \
    && install -d -o ctrail -g ctrail -m 0700 /var/lib/ctrail/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY config/containertrail.yaml /etc/ctrail/containertrail.yaml
USER ctrail
WORKDIR /var/lib/ctrail
ENV CTRAIL_DATA_DIR=/var/lib/ctrail/data
ENTRYPOINT ["ctrail"]
CMD ["run", "--config", "/etc/ctrail/containertrail.yaml"]
