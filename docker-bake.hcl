# docker buildx bake            -> the four images for linux/arm64 and linux/amd64
# docker buildx bake --push     -> the same, pushed to ${REGISTRY}
# make bake-native              -> this machine's platform only (quick local loop)
# Behind a TLS-intercepting proxy: CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt docker buildx bake

variable "REGISTRY" {
  default = "localhost:5000"
}

variable "TAG" {
  default = "latest"
}

variable "BASE_IMAGE" {
  default = "debian:bookworm-slim"
}

variable "PLATFORMS" {
  default = "linux/arm64,linux/amd64"
}

# A CA bundle for pip inside the builds, mounted as the secret "ca" (never stored in a layer).
variable "CA_BUNDLE" {
  default = ""
}

# The overlay of config/celery/overlays/ baked into the snapshot (the last fallback).
variable "CELERY_CONFIG_OVERLAY" {
  default = "rpi"
}

variable "VERSION" {
  default = "0.1.0"
}

variable "REVISION" {
  default = "unknown"
}

function "image" {
  params = [name]
  result = REGISTRY == "" ? "celery-config-sync/${name}:${TAG}" : "${REGISTRY}/celery-config-sync/${name}:${TAG}"
}

group "default" {
  targets = ["redis", "config-seeder", "worker", "api"]
}

target "_common" {
  context   = "."
  platforms = split(",", PLATFORMS)
  args = {
    BASE_IMAGE = BASE_IMAGE
  }
  secret = CA_BUNDLE == "" ? [] : ["id=ca,src=${CA_BUNDLE}"]
  labels = {
    "org.opencontainers.image.vendor"   = "celery-config-sync"
    "org.opencontainers.image.licenses" = "MIT"
    "org.opencontainers.image.version"  = VERSION
    "org.opencontainers.image.revision" = REVISION
    "org.opencontainers.image.base.name" = BASE_IMAGE
  }
}

# The shared lower layers: never tagged, handed to the Python images as named contexts.
target "python-builder" {
  inherits   = ["_common"]
  dockerfile = "images/python-base/Dockerfile"
  target     = "python-builder"
}

target "python-base" {
  inherits   = ["_common"]
  dockerfile = "images/python-base/Dockerfile"
  target     = "python-base"
  args = {
    CELERY_CONFIG_OVERLAY = CELERY_CONFIG_OVERLAY
  }
}

target "_python" {
  inherits = ["_common"]
  contexts = {
    python-builder = "target:python-builder"
    python-base    = "target:python-base"
  }
}

target "redis" {
  inherits   = ["_common"]
  dockerfile = "images/redis/Dockerfile"
  tags       = [image("redis")]
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync redis"
    "org.opencontainers.image.description" = "Redis from Debian for a Raspberry Pi 4: AOF, 256 MB, never evicts"
  }
}

target "config-seeder" {
  inherits   = ["_python"]
  dockerfile = "images/config-seeder/Dockerfile"
  tags       = [image("config-seeder")]
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync config-seeder"
    "org.opencontainers.image.description" = "One-shot: publishes the Celery configuration into Redis"
  }
}

target "worker" {
  inherits   = ["_python"]
  dockerfile = "images/worker/Dockerfile"
  tags       = [image("worker")]
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync worker"
    "org.opencontainers.image.description" = "Celery worker under supervisord, configured from Redis"
  }
}

target "api" {
  inherits   = ["_python"]
  dockerfile = "images/api/Dockerfile"
  tags       = [image("api")]
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync api"
    "org.opencontainers.image.description" = "FastAPI enqueueing Celery tasks routed by the configuration in Redis"
  }
}
