"""The deployment files, checked offline: no Docker engine or cluster runs here.

docker-compose.yml against the Compose Specification's JSON schema (vendored by
check-jsonschema), every Kubernetes manifest against the API's OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail), KEDA's ScaledObjects (a CRD, no schema
shipped) and the Kustomize files by hand; and all of them, the Grafana dashboard and the alert
rules against the code: the consumer groups, ports, secrets and metric names they name exist.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from services.advocacy.__main__ import SPEC as ADVOCACY
from services.awareness.__main__ import SPEC as AWARENESS
from services.engagement.__main__ import SPEC as ENGAGEMENT
from shared import metrics
from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"
STAGES = {s.name: s for s in (AWARENESS, ENGAGEMENT, ADVOCACY)}
COMPOSED = (*STAGES, "gateway")
"""The services docker-compose.yml runs (the gateway in one process, role `all`)."""
GATEWAYS = {"gateway": "api", "gateway-read-model": "read-model"}
"""The gateway's two Kubernetes Deployments, and the FLYWHEEL_GATEWAY_ROLE of each."""
FLYWHEEL_PROCESSES = (*STAGES, *GATEWAYS)

# Test-only dependencies (the dev extra): without them these checks are skipped, not failed.
kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")
yaml = pytest.importorskip("yaml")
pytest.importorskip("check_jsonschema")
pytest.importorskip("prometheus_client")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomization(directory: Path) -> dict[str, Any]:
    loaded = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _resources(directory: Path) -> list[dict[str, Any]]:
    """Every object a kustomization (with its bases and components) would emit, unpatched."""
    kustomization = _kustomization(directory)
    found: list[dict[str, Any]] = []
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        path = (directory / entry).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml names missing {entry}"
        found += _resources(path) if path.is_dir() else _docs(path)
    return found


# ---- compose ------------------------------------------------------------------------------


def _compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    loaded = json.loads(vendored.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_file_follows_the_compose_specification() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    schema = _compose_schema()
    jsonschema.validators.validator_for(schema)(schema).validate(compose)

    services = compose["services"]
    for name in ("kafka", "postgres", *COMPOSED):
        assert name in services and "profiles" not in services[name], name
    images = {services[n]["image"] for n in COMPOSED}
    assert images == {"flywheel:dev"}, "the four services run from one image"
    # one host: the gateway's API and read model in one process, as devstack runs them
    assert services["gateway"]["environment"]["FLYWHEEL_GATEWAY_ROLE"] == "all"
    observability = {n for n, s in services.items() if "observability" in s.get("profiles", [])}
    assert observability == {"otel-collector", "jaeger", "prometheus", "grafana"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"compose mounts missing {source}"


def test_prometheus_scrapes_every_service_where_it_listens() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    listening = {
        name: compose[name]["environment"].get("FLYWHEEL_HEALTH_PORT")
        or compose[name]["environment"].get("FLYWHEEL_METRICS_PORT")  # the gateway's
        for name in COMPOSED
    }
    config = yaml.safe_load((REPO / "deploy/otel/prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert targets == {f"{name}:{port}" for name, port in listening.items()}
    assert yaml.safe_load((REPO / "deploy/otel/collector.yaml").read_text())["service"]["pipelines"]


# ---- kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("directory", ["base", "overlays/production"])
def test_kubernetes_manifests_follow_the_api_schemas(directory: str) -> None:
    objects = _resources(K8S / directory)
    assert objects
    custom = []
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            custom.append(obj)
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    if directory == "overlays/production":
        assert {o["metadata"]["name"] for o in custom} == set(STAGES)


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_kubernetes_manifests_agree_with_the_code() -> None:
    objects = _resources(K8S / "overlays/production")
    config = _by_kind(objects, "ConfigMap")["flywheel-config"]["data"]
    secret_keys = set(_by_kind(objects, "Secret")["flywheel-secrets"]["stringData"])
    deployments = _by_kind(objects, "Deployment")
    assert set(deployments) == set(FLYWHEEL_PROCESSES)
    grace = float(config["FLYWHEEL_SHUTDOWN_GRACE_S"])
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        module = "gateway" if name in GATEWAYS else name
        assert container["command"] == ["python", "-m", f"services.{module}"]
        ports = [8080, 9464] if name == "gateway" else [int(config["FLYWHEEL_HEALTH_PORT"])]
        assert [p["containerPort"] for p in container["ports"]] == ports
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert pod["terminationGracePeriodSeconds"] > grace
        variables = {env["name"]: env for env in container.get("env", [])}
        if name in GATEWAYS:  # the API and the read model apart, on one database
            assert variables["FLYWHEEL_GATEWAY_ROLE"]["value"] == GATEWAYS[name], name
            database = variables["FLYWHEEL_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert database["key"] == "gateway-database-url", name
        # static membership: one member name per replica, the pod's (shared.kafka)
        instance = variables["FLYWHEEL_INSTANCE_ID"]["valueFrom"]["fieldRef"]
        assert instance["fieldPath"] == "metadata.name", name
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "flywheel-secrets" and ref["key"] in secret_keys
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert deployment["spec"]["template"]["metadata"]["labels"].items() >= labels.items()
        [pdb] = [
            p
            for p in _by_kind(objects, "PodDisruptionBudget").values()
            if p["spec"]["selector"]["matchLabels"] == labels
        ]
        assert pdb["spec"]["maxUnavailable"] == 1
    hpa = _by_kind(objects, "HorizontalPodAutoscaler")["gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"


def test_keda_scales_each_stage_service_on_its_own_consumer_group() -> None:
    objects = _resources(K8S / "overlays/production")
    partitions = int(
        _by_kind(objects, "ConfigMap")["flywheel-config"]["data"]["FLYWHEEL_TOPIC_PARTITIONS"]
    )
    scaled = _by_kind(objects, "ScaledObject")
    assert set(scaled) == set(STAGES)
    for name, obj in scaled.items():
        spec = obj["spec"]
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert spec["scaleTargetRef"]["name"] == name
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        [trigger] = spec["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == STAGES[name].consumer_group
        consumed = {t.name for t in STAGES[name].consumes}
        assert meta.get("topic") in (consumed if len(consumed) == 1 else {None})
        assert int(meta["lagThreshold"]) > 0
    # KEDA owns the stage services' replicas: the overlay removes them from the base
    patches = _kustomization(K8S / "overlays/production")["patches"]
    assert any(
        "/spec/replicas" in p["patch"] and "awareness" in p["target"]["name"] for p in patches
    )


# ---- dashboards and alerts ----------------------------------------------------------------


def _exported_metric_names() -> set[str]:
    """Every metric name this code exports to Prometheus, each instrument recorded once."""
    metrics.configure()
    labels = {"service": "manifest-test"}
    for counter in (metrics.RECORDS_CONSUMED, metrics.EVENTS, metrics.GATEWAY_PUBLISHED):
        counter.add(0, labels)
    for histogram in (
        metrics.BATCH_SIZE,
        metrics.BATCH_DURATION,
        metrics.EVENT_LATENCY,
        metrics.CONSUME_DELAY,
    ):
        histogram.record(0, labels)
    metrics.record_webhook_delivery("manifest-test", "delivered", 0)
    observed = metrics._OBSERVED
    observed.lag[("manifest-test", "g", "t", 0)] = 0
    observed.outbox["manifest-test"] = (0, 0.0)
    observed.watermark["manifest-test"] = 0.0
    try:
        text = metrics.prometheus_text()[1].decode()
    finally:
        del observed.lag[("manifest-test", "g", "t", 0)]
        del observed.outbox["manifest-test"]
        del observed.watermark["manifest-test"]
    return set(re.findall(r"^(flywheel_[a-z_]+)", text, re.MULTILINE))


def test_dashboard_and_alerts_name_only_metrics_that_exist() -> None:
    exported = _exported_metric_names()
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/flywheel.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((REPO / "deploy/otel/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    named = {m for e in exprs for m in re.findall(r"\b(flywheel_[a-z_]+)", e)}
    assert named, "no flywheel metric in the dashboard"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
    assert {p["gridPos"]["y"] for p in dashboard["panels"]}, "panels need positions"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["annotations"]["runbook"].startswith("docs/OPERATIONS.md#")
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert anchor in _anchors(), f"{rule['alert']}: no section #{anchor} in the runbook"


def _anchors() -> set[str]:
    text = (REPO / "docs/OPERATIONS.md").read_text()
    return {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    }
