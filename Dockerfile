# Herald on Debian 12: build with the same packages as ./setup.sh, run as an
# unprivileged user. (Docker is not available on the development machines, so
# this file is exercised by users, not by the test suite.)
FROM debian:12 AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libwebsockets-dev libjansson-dev libjwt-dev \
      libhiredis-dev libssl-dev libargon2-dev libsqlite3-dev libicu-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERALD_WERROR=OFF \
 && cmake --build build -j"$(nproc)" --target herald

FROM debian:12
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libwebsockets17 libjansson4 libjwt0 libhiredis0.14 libssl3 libargon2-1 libsqlite3-0 \
      libicu72 \
      ca-certificates && rm -rf /var/lib/apt/lists/* && useradd -r -u 10001 herald \
 && mkdir /data && chown herald /data
COPY --from=build /src/build/herald /usr/local/bin/herald
USER herald
ENV HERALD_LISTEN=0.0.0.0:8080 HERALD_DB=/data/herald.db HERALD_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve"]
