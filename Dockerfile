# Herald's image: built on debian:12 with the packages ./setup.sh installs
# (BUILD_PKGS), run on debian:12-slim with only the libraries the binary
# loads (RUNTIME_PKGS in setup.sh, which tests/integration/test_dockerfile.py
# checks against a running herald), as an unprivileged user.
#
#   docker build -t herald .
#   docker run -p 8080:8080 -e HERALD_JWT_SECRET=... -e HERALD_API_KEY=... herald
#
# Embedded mode keeps its SQLite store in /data (mount a volume there);
# cluster mode (HERALD_REDIS_URL) needs no volume. docker-compose.yml runs two
# nodes, Redis and nginx.

FROM debian:12 AS build
WORKDIR /src
# setup.sh alone first, so the package layer stays cached across source edits
COPY setup.sh ./
RUN ./setup.sh deps build && rm -rf /var/lib/apt/lists/*
COPY . .
# HERALD_TESTS=OFF: the tests need python3, and .dockerignore leaves them out;
# HERALD_WERROR=OFF: a newer compiler's new warning must not break an image build.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERALD_TESTS=OFF -DHERALD_WERROR=OFF \
 && cmake --build /build -j"$(nproc)" --target herald

FROM debian:12-slim
COPY setup.sh /tmp/setup.sh
RUN /tmp/setup.sh deps runtime && rm -rf /var/lib/apt/lists/* /tmp/setup.sh \
 && useradd --system --user-group --uid 10001 --home-dir /data --shell /usr/sbin/nologin herald \
 && install -d -o herald -g herald -m 0700 /data
COPY --from=build /build/herald /usr/local/bin/herald
COPY deploy/herald-healthcheck /usr/local/bin/herald-healthcheck
# numeric, so orchestrators can verify runAsNonRoot without reading /etc/passwd
USER 10001:10001
WORKDIR /data
ENV HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_DB=/data/herald.db \
    HERALD_LOG_FORMAT=json
EXPOSE 8080
# /healthz: the process serves (liveness). docker-compose.yml checks /readyz
# instead, which also covers Redis. See deploy/herald-healthcheck for why it
# is bash's /dev/tcp and not curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["herald-healthcheck", "/healthz"]
ENTRYPOINT ["herald"]
CMD ["serve"]
