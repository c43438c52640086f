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

# Where the images' source lives (org.opencontainers.image.source); empty: no such label.
variable "SOURCE_URL" {
  default = ""
}

function "image" {
  params = [project, name, tag]
  result = REGISTRY == "" ? "${project}/${name}:${tag}" : "${REGISTRY}/${project}/${name}:${tag}"
}

# Every image is tagged TAG (latest by default) and the project's VERSION: `bake --push` to
# the registry you name publishes both.
function "tags" {
  params = [project, name]
  result = distinct([image(project, name, TAG), image(project, name, VERSION)])
}

group "default" {
  targets = ["redis", "config-seeder", "worker", "api", "builder"]
}

# The example project's images (examples/orders), built from its Dockerfile, the README's
# recipe, on top of the targets above: `docker buildx bake example`.
group "example" {
  targets = ["example-worker", "example-api", "example-seeder"]
}

target "_common" {
  context   = "."
  platforms = split(",", PLATFORMS)
  args = {
    BASE_IMAGE = BASE_IMAGE
  }
  secret = CA_BUNDLE == "" ? [] : ["id=ca,src=${CA_BUNDLE}"]
  labels = merge({
    "org.opencontainers.image.vendor"   = "celery-config-sync"
    "org.opencontainers.image.licenses" = "MIT"
    "org.opencontainers.image.version"  = VERSION
    "org.opencontainers.image.revision" = REVISION
    "org.opencontainers.image.base.name" = BASE_IMAGE
  }, SOURCE_URL == "" ? {} : { "org.opencontainers.image.source" = SOURCE_URL })
}

# The shared lower layers: never tagged, handed to the Python images as named contexts.
target "python-builder" {
  inherits   = ["_common"]
  dockerfile = "images/python-base/Dockerfile"
  target     = "python-builder"
}

# The builder, published: pip and the wheelhouse of every image (with its constraints file),
# where an image built on ours builds its own project's wheels (examples/orders/Dockerfile).
target "builder" {
  inherits = ["python-builder"]
  tags     = tags("celery-config-sync", "builder")
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync builder"
    "org.opencontainers.image.description" = "Build stage for images built on celery-config-sync's: pip and its wheels"
  }
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
  tags       = tags("celery-config-sync", "redis")
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync redis"
    "org.opencontainers.image.description" = "Redis from Debian for a Raspberry Pi 4: AOF, 256 MB, never evicts"
  }
}

target "config-seeder" {
  inherits   = ["_python"]
  dockerfile = "images/config-seeder/Dockerfile"
  tags       = tags("celery-config-sync", "config-seeder")
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync config-seeder"
    "org.opencontainers.image.description" = "One-shot: publishes the Celery configuration into Redis"
  }
}

target "worker" {
  inherits   = ["_python"]
  dockerfile = "images/worker/Dockerfile"
  tags       = tags("celery-config-sync", "worker")
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync worker"
    "org.opencontainers.image.description" = "Celery worker under supervisord, configured from Redis"
  }
}

target "api" {
  inherits   = ["_python"]
  dockerfile = "images/api/Dockerfile"
  tags       = tags("celery-config-sync", "api")
  labels = {
    "org.opencontainers.image.title"       = "celery-config-sync api"
    "org.opencontainers.image.description" = "FastAPI enqueueing Celery tasks routed by the configuration in Redis"
  }
}

# ----------------------------------------------------------------- the example's own images
# Its Dockerfile names our published images (ARG BUILDER, WORKER, API, SEEDER); here they are
# the targets above, handed over as named contexts, so that the example builds in one bake
# without a registry round trip.
target "_example" {
  inherits   = ["_common"]
  context    = "examples/orders"
  dockerfile = "Dockerfile"
  args = {
    BUILDER = "celery-config-sync-builder"
    WORKER  = "celery-config-sync-worker"
    API     = "celery-config-sync-api"
    SEEDER  = "celery-config-sync-seeder"
  }
  contexts = {
    celery-config-sync-builder = "target:builder"
    celery-config-sync-worker  = "target:worker"
    celery-config-sync-api     = "target:api"
    celery-config-sync-seeder  = "target:config-seeder"
  }
  labels = {
    "org.opencontainers.image.vendor" = "orders (example)"
  }
}

target "example-worker" {
  inherits = ["_example"]
  target   = "worker"
  tags     = tags("orders", "worker")
  labels = {
    "org.opencontainers.image.title"       = "orders worker"
    "org.opencontainers.image.description" = "The example project's Celery worker and beat"
  }
}

target "example-api" {
  inherits = ["_example"]
  target   = "api"
  tags     = tags("orders", "api")
  labels = {
    "org.opencontainers.image.title"       = "orders api"
    "org.opencontainers.image.description" = "The example project's FastAPI app"
  }
}

target "example-seeder" {
  inherits = ["_example"]
  target   = "seeder"
  tags     = tags("orders", "config-seeder")
  labels = {
    "org.opencontainers.image.title"       = "orders config-seeder"
    "org.opencontainers.image.description" = "Publishes the example project's configuration"
  }
}
