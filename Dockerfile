# syntax=docker/dockerfile:1
# Edge Data Broker: multi-stage build for linux/amd64 and linux/arm64
#   docker buildx build --platform linux/amd64,linux/arm64 -t edge-data-broker .
# Node 24 on Debian 13 (trixie): its glibc (2.41) loads the uWebSockets.js binaries
# built for Node 22/24; elsewhere the broker falls back to the ws engine by itself.

FROM node:24-trixie-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json asconfig.json ./
COPY assembly ./assembly
COPY src ./src
COPY bench ./bench
COPY web ./web
COPY scripts/slim-modules.mjs scripts/build-console.mjs ./scripts/
# production dependencies only; of uWebSockets.js only the build for this platform and Node,
# and no binaryen command-line tools (node_modules about 400 -> 70 MB)
RUN npm run build && npm prune --omit=dev --ignore-scripts && node scripts/slim-modules.mjs

FROM node:24-trixie-slim AS runtime
ENV NODE_ENV=production \
    EDB_DATA_DIR=/data \
    EDB_LOG_FORMAT=json
WORKDIR /app
COPY --from=build --chown=node:node /app/package.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --from=build --chown=node:node /app/build ./build
COPY --from=build --chown=node:node /app/assembly ./assembly
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
# MQTT, MQTTS, WebSocket, WSS, HTTP status/metrics, fr_script rules API
EXPOSE 1883 8883 9001 9002 8888 8000
# /healthz on the HTTP port (Node 24 has fetch); with EDB_HTTP_PORT=-1, or HTTPS (EDB_TLS_CERT: the
# certificate need not be trusted here), a TCP connect to MQTT
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "const h=Number(process.env.EDB_HTTP_PORT??8888);const ok=()=>process.exit(0),bad=()=>process.exit(1);if(h>=0&&!process.env.EDB_TLS_CERT)fetch('http://127.0.0.1:'+h+'/healthz').then(r=>r.ok?ok():bad(),bad);else require('net').connect(Number(process.env.EDB_MQTT_PORT??1883),'127.0.0.1').on('connect',ok).on('error',bad)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["start"]
