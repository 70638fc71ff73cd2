# The gateway image used by docker-compose.yml: Python 3.11 + git (the embedded backend runs `git http-backend`).
#   docker build -t deploy-token-gateway .
#   docker run --rm -v gw:/var/lib/gateway -v $PWD/deploy/gateway.toml:/etc/gateway/gateway.toml:ro \
#       -e GATEWAY_CONFIG=/etc/gateway/gateway.toml deploy-token-gateway init
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user owning the data folder; a new named volume mounted there copies this ownership.
RUN useradd --system --uid 10001 --home-dir /var/lib/gateway --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/gateway /etc/gateway \
    && chown gateway:gateway /var/lib/gateway

WORKDIR /opt/gateway
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && rm -rf /opt/gateway/build

USER gateway
ENV PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["gateway"]
CMD ["serve"]
