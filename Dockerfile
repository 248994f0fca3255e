# warren: multi-stage image on Debian bookworm, the distribution it is built
# and tested on.
#
#   docker build -t warren .
#   docker run --rm -e WARREN_AUTH_JWT_SECRET=… -e WARREN_AMQP_URL=amqp://… \
#     -p 8080:8080 -p 127.0.0.1:9090:9090 warren
#
# Configuration is the environment (WARREN_<SECTION>_<KEY>) or an INI file
# mounted at /etc/warren/warren.ini and named with `--config` (see the README).
# The admin port (9090: /metrics, /healthz, /readyz) must not be published to
# the internet.

# ---- build stage: the same packages as scripts/lib.sh (WARREN_DEB_PACKAGES,
# without the broker). integration/deploy.test.js checks they stay in step.
FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config librabbitmq-dev libuv1-dev libwslay-dev \
      node-llhttp libmsgpack-dev libjansson-dev libinih-dev libssl-dev libcmocka-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWARREN_WERROR=ON \
 && cmake --build /build -j"$(nproc)" \
 && (cd /build && ctest --output-on-failure -j"$(nproc)") \
 && strip /build/warren

# ---- runtime stage: only the shared libraries warren links against (the
# Debian packages that own them; deploy.test.js compares this list with
# `ldd warren`) and CA certificates for amqps://.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librabbitmq4 libuv1 libwslay1 libmsgpackc2 libjansson4 libinih1 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin warren
COPY --from=build /build/warren /usr/local/bin/warren
USER warren
# Inside a container warren must listen on every interface; publish the admin
# port only to the host (or a private network), never to the internet.
ENV WARREN_SERVER_LISTEN=0.0.0.0:8080 \
    WARREN_ADMIN_LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
# No curl in the image: bash's /dev/tcp asks /healthz on the admin port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/${WARREN_ADMIN_LISTEN##*:} && printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && read -r -t 2 _ code _ <&3 && [ "$code" = 200 ]'
# SIGTERM drains in-flight notifications (shutdown.drain_timeout_ms); give the
# container at least that long to stop (docker stop -t, stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/warren"]
