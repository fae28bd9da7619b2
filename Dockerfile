# syntax=docker/dockerfile:1.7
#
# dropserve images. Two targets:
#   docker build --target cpu  -t dropserve:cpu  .
#   docker build --target cuda -t dropserve:cuda --platform linux/amd64 .
# Optional k6 binary in the image (k6 is AGPL-3.0; off by default):
#   docker build --target cpu --build-arg WITH_K6=1 -t dropserve:cpu-k6 .
# Run (the model directory is mounted read-only at /models):
#   docker run --rm -p 8000:8000 -p 50051:50051 -v "$PWD/models:/models:ro" dropserve:cpu \
#     --model /models/stories260K/stories260K.bin --variant attn-2=attn:1,3
#   docker run --rm --gpus all -p 8000:8000 -v "$PWD/models:/models:ro" dropserve:cuda --model /models/...
# The image is the source tree, production node_modules and dist/ (the compiled CLI and engine
# worker, built with esbuild by `node scripts/build.mjs` after the sources are copied in), so a
# container starts without compiling TypeScript.

ARG NODE_IMAGE=node:20-bookworm-slim
# onnxruntime-node 1.30's CUDA EP is built for CUDA 12.x and cuDNN 9 (any 12.x minor works).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
# Same k6 release as the @types/k6 the k6 scripts are type-checked against.
ARG K6_IMAGE=grafana/k6:2.3.0
ARG WITH_K6=0

FROM ${NODE_IMAGE} AS node

# ---- production dependencies, CPU: the CPU binary ships inside the npm package --------------------
FROM node AS deps-cpu
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# npm ci runs `prepare` (scripts/build.mjs); here, without sources, it builds nothing.
COPY scripts/build.mjs ./scripts/
# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's postinstall downloads nothing (.npmrc says the
# same with its older spelling, onnxruntime-node-install-cuda=skip).
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

# ---- production dependencies, CUDA: plus the CUDA 12 EP libraries from NuGet ------------------------
FROM node AS deps-cuda
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# npm ci runs `prepare` (scripts/build.mjs); here, without sources, it builds nothing.
COPY scripts/build.mjs ./scripts/
# onnxruntime-node/script/install.js reads ONNXRUNTIME_NODE_INSTALL before anything in .npmrc: "1"
# forces the platform's manifest (linux/x64: cuda12 → libonnxruntime_providers_{cuda,shared,tensorrt}.so
# next to the binding). The test makes a failed download fail the build instead of the first request.
RUN ONNXRUNTIME_NODE_INSTALL=1 npm ci --omit=dev --no-audit --no-fund \
 && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so \
 && npm cache clean --force

# ---- optional k6 (static binary) ---------------------------------------------------------------------
FROM ${K6_IMAGE} AS k6-image
FROM node AS k6-1
COPY --from=k6-image /usr/bin/k6 /k6-bin/k6
FROM node AS k6-0
RUN mkdir /k6-bin
# BuildKit builds only the stage picked here, so WITH_K6=0 never pulls the k6 image.
FROM k6-${WITH_K6} AS k6

# ---- cpu --------------------------------------------------------------------------------------------
FROM node AS cpu
ARG DROPSERVE_COMMIT=unknown
LABEL org.opencontainers.image.title="dropserve" \
      org.opencontainers.image.description="LLM inference server with droppable attention/MLP sublayers (CPU)" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${DROPSERVE_COMMIT}"
ENV NODE_ENV=production \
    DROPSERVE_COMMIT=${DROPSERVE_COMMIT} \
    HF_HOME=/models/huggingface
RUN groupadd --system --gid 10001 dropserve \
 && useradd --system --uid 10001 --gid dropserve --home-dir /app --shell /usr/sbin/nologin dropserve \
 && mkdir -p /models
WORKDIR /app
# Root-owned code and dependencies: the server user can read and run them, not rewrite them.
COPY --from=deps-cpu /app/node_modules ./node_modules
COPY --from=k6 /k6-bin/ /usr/local/bin/
COPY . .
# Compiled as root, like the rest of /app: the server user can run dist/, not rewrite it.
RUN node scripts/build.mjs
USER dropserve
VOLUME ["/models"]
EXPOSE 8000 50051
# /health answers 503 while the model loads, so a large model needs the start period.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8000/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/dropserve.js", "serve", "--host", "0.0.0.0"]

# ---- cuda -------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda
ARG DROPSERVE_COMMIT=unknown
LABEL org.opencontainers.image.title="dropserve" \
      org.opencontainers.image.description="LLM inference server with droppable attention/MLP sublayers (CUDA 12)" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${DROPSERVE_COMMIT}"
# Node from the official image: one Node build for both targets (glibc 2.36 binary, runs on 24.04's 2.39).
COPY --from=node /usr/local/bin/node /usr/local/bin/node
ENV NODE_ENV=production \
    DROPSERVE_COMMIT=${DROPSERVE_COMMIT} \
    HF_HOME=/models/huggingface \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# `node --version` fails the build here if the CUDA base lacks a library the Node binary links to.
RUN node --version \
 && groupadd --system --gid 10001 dropserve \
 && useradd --system --uid 10001 --gid dropserve --home-dir /app --shell /usr/sbin/nologin dropserve \
 && mkdir -p /models
WORKDIR /app
COPY --from=deps-cuda /app/node_modules ./node_modules
COPY --from=k6 /k6-bin/ /usr/local/bin/
COPY . .
# Compiled as root, like the rest of /app: the server user can run dist/, not rewrite it.
RUN node scripts/build.mjs
USER dropserve
VOLUME ["/models"]
EXPOSE 8000 50051
HEALTHCHECK --interval=15s --timeout=3s --start-period=180s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8000/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# --device cuda comes first, so a later --device on the command line still wins (last value counts).
ENTRYPOINT ["node", "bin/dropserve.js", "serve", "--host", "0.0.0.0", "--device", "cuda"]
