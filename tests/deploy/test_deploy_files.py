"""Static checks of the deployment files: Dockerfile, compose, Prometheus, Grafana, Kubernetes.

Nothing here starts a container or a cluster. The Prometheus files are checked by
``promtool`` (Debian/Ubuntu: ``apt-get install -y prometheus`` ships
``/usr/bin/promtool``). ``.ci/run`` installs it, and under CI (``CI`` set) a
missing promtool fails; on a developer machine these checks are skipped with a
message instead, so ``make test`` needs nothing but Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from processor.settings import Settings, env_name
from tests.deploy.exposed_metrics import EXPOSED, normalise

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "journey-processor.json"
GRAFANA_DATASOURCE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARDS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "journey.yml"
K8S = DEPLOY / "k8s"

WEB_PORT = 6066
DATA_DIR = "/var/lib/journey"
SETTING_VARIABLES = {env_name(f.name) for f in fields(Settings)}
METRIC_NAME = re.compile(r"\bjourney_[a-z0-9_]+")
REQUIRED_ALERTS = {
    "JourneyConsumerLagGrowing",
    "JourneyDeadLetterRateHigh",
    "JourneyNoEventsConsumed",
    "JourneyWorkerNotReady",
    "JourneyStageChangesStopped",
}
# What the dashboard must show (the issue's list of panels).
DASHBOARD_METRICS = {
    "journey_events_total",
    "journey_stage_changes_total",
    "journey_customers",
    "journey_event_processing_seconds",
    "journey_event_time_lag_seconds",
    "journey_consumer_lag",
    "journey_dead_letters_total",
    "journey_rebalances_total",
    "journey_recovery_in_progress",
    "journey_recovery_remaining_records",
    "journey_ready",
}


# --- helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def yaml() -> ModuleType:
    module: ModuleType = pytest.importorskip(
        "yaml", reason="PyYAML is not installed: the YAML structure checks need it"
    )
    return module


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    message = (
        "promtool is not on PATH, so the Prometheus config and alert rules cannot be "
        "checked. Install it (Debian/Ubuntu: `apt-get install -y prometheus`, which "
        "ships /usr/bin/promtool); .ci/run does."
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_promtool(promtool: str, *args: str) -> str:
    result = subprocess.run(
        [promtool, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def load_yaml_documents(yaml: ModuleType, path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def load_yaml(yaml: ModuleType, path: Path) -> Any:
    (doc,) = load_yaml_documents(yaml, path)
    return doc


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def image_is_pinned(image: str) -> bool:
    """name:tag (tag not latest) or name@sha256:digest; a registry port is not a tag."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.rsplit(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    queries = [
        target["expr"]
        for panel in all_panels(board["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query))
        if variable.get("definition"):
            queries.append(variable["definition"])
    return queries


def metric_names(text: str) -> set[str]:
    return {normalise(name) for name in METRIC_NAME.findall(text)}


def as_promql(grafana_expr: str) -> str:
    """A dashboard expression with Grafana's interval macros replaced by a duration."""
    return re.sub(r"\$__(rate_interval|interval|range)\b", "5m", grafana_expr)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        pairs.append((instruction.upper(), args.strip()))
    return pairs


# --- Dockerfile ----------------------------------------------------------------


def test_dockerfile_is_multi_stage_from_a_pinned_python_slim_image() -> None:
    instructions = dockerfile_instructions()
    # ARG defaults, e.g. PYTHON_IMAGE, substituted into FROM lines.
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)

    def substitute(match: re.Match[str]) -> str:
        return args.get(match.group(1), match.group(0))

    bases = [
        re.sub(r"\$\{?(\w+)\}?", substitute, rest.split()[0])
        for instruction, rest in instructions
        if instruction == "FROM"
    ]
    assert len(bases) >= 2, "expected a builder stage and a runtime stage"
    for image in bases:
        assert image_is_pinned(image), f"unpinned base image {image!r}"
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    copies = [rest for i, rest in instructions if i == "COPY"]
    assert any(c.startswith("--from=builder") and "/opt/venv" in c for c in copies), copies
    assert any(i == "RUN" and "pip install ." in rest for i, rest in instructions)


def test_dockerfile_runtime_stage() -> None:
    instructions = dockerfile_instructions()
    last_from = max(n for n, (i, _) in enumerate(instructions) if i == "FROM")
    runtime = instructions[last_from:]
    kinds: dict[str, list[str]] = {}
    for instruction, rest in runtime:
        kinds.setdefault(instruction, []).append(rest)

    assert kinds["USER"] == ["10001:10001"] or kinds["USER"] == ["10001"], kinds["USER"]
    assert kinds["WORKDIR"] == ["/app"]
    assert kinds["ENTRYPOINT"] == ['["journey"]']
    assert kinds["CMD"] == ['["worker"]']
    assert str(WEB_PORT) in kinds["EXPOSE"]
    env = " ".join(kinds["ENV"])
    assert f"JOURNEY_DATA_DIR={DATA_DIR}" in env
    assert "JOURNEY_WEB_BIND=0.0.0.0" in env
    assert any(DATA_DIR in volume for volume in kinds["VOLUME"])
    (healthcheck,) = kinds["HEALTHCHECK"]
    assert "urllib" in healthcheck and "127.0.0.1" in healthcheck and "/healthz" in healthcheck
    run = " ".join(kinds["RUN"])
    assert "--uid 10001" in run and DATA_DIR in run  # the volume is owned by the user


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert patterns[0] == "*", "exclude everything first, then let the build inputs back in"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    for instruction, rest in dockerfile_instructions():
        if instruction != "COPY" or rest.startswith("--from"):
            continue
        sources = [s for s in rest.split() if not s.startswith("--")][:-1]
        for source in sources:
            assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
            assert (REPO / source).exists(), source
    for local in (".venv", ".git", "tests"):
        assert f"!{local}" not in patterns


# --- Prometheus (promtool) -------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", str(ALERTS.relative_to(REPO)))
    assert "SUCCESS" in output


def test_promtool_check_config_from_the_repository_root(promtool: str) -> None:
    output = run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG.relative_to(REPO)))
    assert "SUCCESS" in output
    assert "rule files found" in output  # rule_files resolved next to the config


def test_promtool_alert_unit_tests(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", str(ALERTS_TEST.relative_to(REPO)))


def test_dashboard_expressions_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{n}:check", "expr": as_promql(expr)}
        for n, expr in enumerate(dashboard_queries(dashboard()))
        if not expr.startswith("label_values(")
    ]
    assert rules
    rule_file = tmp_path / "dashboard-queries.yml"  # JSON is YAML
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", str(rule_file))


# --- metric names ------------------------------------------------------------------


def test_dashboard_uses_only_exposed_metrics() -> None:
    used = set().union(*(metric_names(q) for q in dashboard_queries(dashboard())))
    assert used, "no journey_* metric found in the dashboard"
    assert used <= EXPOSED, f"not exposed by the workers: {sorted(used - EXPOSED)}"
    assert used >= DASHBOARD_METRICS, f"missing panels for: {sorted(DASHBOARD_METRICS - used)}"


def test_alert_rules_use_only_exposed_metrics() -> None:
    for path in (ALERTS, ALERTS_TEST):
        used = metric_names(path.read_text(encoding="utf-8"))
        assert used, f"no journey_* metric found in {path.name}"
        assert used <= EXPOSED, f"{path.name}: not exposed by the workers: {sorted(used - EXPOSED)}"


def test_exposed_metric_names_are_prometheus_names() -> None:
    for name in EXPOSED:
        assert re.fullmatch(r"journey_[a-z0-9_]+", name), name
        assert normalise(name) == name
    assert normalise("journey_event_processing_seconds_bucket") == (
        "journey_event_processing_seconds"
    )
    assert normalise("journey_events_total") == "journey_events_total"


def test_alert_rules_have_for_severity_and_annotations(yaml: ModuleType) -> None:
    rules = [rule for group in load_yaml(yaml, ALERTS)["groups"] for rule in group["rules"]]
    names = {rule.get("alert") for rule in rules}
    assert names >= REQUIRED_ALERTS, sorted(REQUIRED_ALERTS - names)
    for rule in rules:
        assert rule.get("for"), f"{rule['alert']}: no `for:`"
        assert rule.get("labels", {}).get("severity") in {"info", "warning", "critical"}, rule
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]


def test_alert_unit_tests_cover_every_alert(yaml: ModuleType) -> None:
    rules = [rule for group in load_yaml(yaml, ALERTS)["groups"] for rule in group["rules"]]
    tested = {
        case["alertname"]
        for test in load_yaml(yaml, ALERTS_TEST)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules} <= tested


# --- Grafana -------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    assert 36 <= board["schemaVersion"] <= 45
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ids = set()
    boxes = []
    for panel in all_panels(board["panels"]):
        assert panel["id"] not in ids, f"duplicate panel id {panel['id']}"
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        boxes.append((panel["title"], grid))
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("targets"), panel
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert source["type"] == "prometheus"
            uid = source["uid"]
            if uid.startswith("$"):
                name = uid.strip("${}")
                assert variables[name]["type"] == "datasource", uid
            else:
                assert uid == "prometheus", uid
    for n, (title, a) in enumerate(boxes):
        for other, b in boxes[n + 1 :]:
            overlap = (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            )
            assert not overlap, f"panels {title!r} and {other!r} overlap"


def test_grafana_provisioning_matches_the_dashboard_and_compose(yaml: ModuleType) -> None:
    (source,) = load_yaml(yaml, GRAFANA_DATASOURCE)["datasources"]
    assert source["type"] == "prometheus"
    board = dashboard()
    datasource_variables = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    for variable in datasource_variables:
        assert variable["current"]["value"] == source["uid"]
    compose = load_yaml(yaml, COMPOSE)
    prometheus_name = next(name for name in compose["services"] if "prometheus" in name)
    assert source["url"].startswith(f"http://{prometheus_name}:9090")

    (provider,) = load_yaml(yaml, GRAFANA_DASHBOARDS)["providers"]
    grafana = next(s for name, s in compose["services"].items() if "grafana" in name)
    mounts = {
        target.split(":")[0]: source_path
        for volume in grafana["volumes"]
        for source_path, target in [volume.split(":", 1)]
    }
    mounted_from = mounts[provider["options"]["path"]]
    assert (REPO / mounted_from / DASHBOARD.name).is_file()


# --- docker compose ------------------------------------------------------------------


def compose_workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if "worker" in (service.get("command") or []) and "profiles" not in service
    }


def test_compose_services_use_pinned_images_or_a_build(yaml: ModuleType) -> None:
    compose = load_yaml(yaml, COMPOSE)
    assert compose["services"]
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is not None:
            assert image_is_pinned(image), f"{name}: image {image!r} is not pinned"
        else:
            assert service.get("build"), f"{name}: neither image nor build"
            build = service["build"]
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else ""
            context = build.get("context", ".") if isinstance(build, dict) else build
            assert (REPO / context / dockerfile).is_file(), f"{name}: {build}"
    images = {s.get("image", "").split(":")[0] for s in compose["services"].values()}
    assert {"apache/kafka", "prom/prometheus", "grafana/grafana"} <= images


def test_compose_workers(yaml: ModuleType) -> None:
    compose = load_yaml(yaml, COMPOSE)
    workers = compose_workers(compose)
    assert len(workers) >= 2, sorted(compose["services"])
    hosts = []
    data_volumes = []
    for name, service in workers.items():
        env = environment(service)
        assert env.get("JOURNEY_BROKER_URL", "").startswith("kafka://kafka:"), name
        host = env.get("JOURNEY_WEB_HOST")
        assert host in {name, service.get("hostname")}, f"{name}: peers cannot reach {host!r}"
        hosts.append(host)
        assert env.get("JOURNEY_WEB_PORT", str(WEB_PORT)) == str(WEB_PORT)
        assert env.get("JOURNEY_REPLICATION_FACTOR") == "1"
        unknown = {k for k in env if k.startswith("JOURNEY_")} - SETTING_VARIABLES
        assert not unknown, f"{name}: not settings: {sorted(unknown)}"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        data_dir = env.get("JOURNEY_DATA_DIR", DATA_DIR)
        (volume,) = [v for v in service["volumes"] if v.split(":")[1] == data_dir]
        data_volumes.append(volume.split(":")[0])
    assert len(set(hosts)) == len(hosts), f"JOURNEY_WEB_HOST not distinct: {hosts}"
    assert len(set(data_volumes)) == len(data_volumes), data_volumes
    assert set(data_volumes) <= set(compose["volumes"]), "data dirs must be named volumes"


def test_compose_bind_mounts_exist(yaml: ModuleType) -> None:
    compose = load_yaml(yaml, COMPOSE)
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_prometheus_scrapes_every_compose_worker(yaml: ModuleType) -> None:
    compose = load_yaml(yaml, COMPOSE)
    config = load_yaml(yaml, PROMETHEUS_CONFIG)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "journey-processor"]
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    for name, service in compose_workers(compose).items():
        env = environment(service)
        assert f"{name}:{env.get('JOURNEY_WEB_PORT', WEB_PORT)}" in targets, name
    prometheus = next(s for n, s in compose["services"].items() if "prometheus" in n)
    mounted = " ".join(prometheus["volumes"])
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule_file).is_file(), rule_file
        assert f"/etc/prometheus/{rule_file}" in mounted, rule_file


# --- Kubernetes --------------------------------------------------------------------


def k8s_objects(yaml: ModuleType) -> dict[str, dict[str, Any]]:
    """kind -> object for every manifest in deploy/k8s except the kustomization."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_documents(yaml, path):
            assert doc.get("apiVersion") and doc.get("kind"), path.name
            assert doc["metadata"].get("name"), path.name
            assert "namespace" not in doc["metadata"], f"{path.name}: namespace-agnostic"
            key = doc["kind"]
            if key == "Service" and doc["spec"].get("clusterIP") == "None":
                key = "HeadlessService"
            assert key not in objects, f"two {key} manifests"
            objects[key] = doc
    return objects


def test_k8s_manifests_parse_and_kustomization_lists_them(yaml: ModuleType) -> None:
    objects = k8s_objects(yaml)
    assert set(objects) == {
        "ConfigMap",
        "StatefulSet",
        "HeadlessService",
        "Service",
        "PodDisruptionBudget",
        "PodMonitor",
        "Secret",
        "NetworkPolicy",
    }
    kustomization = load_yaml(yaml, K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    for image in kustomization.get("images", []):
        assert image.get("newTag") not in (None, "", "latest") or image.get("digest"), image


def test_k8s_statefulset(yaml: ModuleType) -> None:
    objects = k8s_objects(yaml)
    sts = objects["StatefulSet"]
    spec = sts["spec"]
    headless = objects["HeadlessService"]
    assert spec["replicas"] == 2
    assert spec["serviceName"] == headless["metadata"]["name"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(WEB_PORT)
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"

    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    (container,) = pod["containers"]
    assert image_is_pinned(container["image"]), container["image"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == WEB_PORT

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", WEB_PORT)

    config_name = objects["ConfigMap"]["metadata"]["name"]
    assert {"configMapRef": {"name": config_name}} in container["envFrom"]
    env = [e["name"] for e in container["env"]]
    by_name = {e["name"]: e for e in container["env"]}
    assert by_name["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert by_name["JOURNEY_WEB_HOST"]["value"] == f"$(POD_NAME).{spec['serviceName']}"
    assert env.index("POD_NAME") < env.index("JOURNEY_WEB_HOST"), "$(POD_NAME) must come first"

    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    data_dir = objects["ConfigMap"]["data"].get("JOURNEY_DATA_DIR", DATA_DIR)
    assert mounts[claim["metadata"]["name"]] == data_dir == DATA_DIR
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_k8s_config_and_selectors(yaml: ModuleType) -> None:
    objects = k8s_objects(yaml)
    data = objects["ConfigMap"]["data"]
    unknown = set(data) - SETTING_VARIABLES
    assert not unknown, f"ConfigMap keys that are not settings: {sorted(unknown)}"
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    assert data["JOURNEY_BROKER_URL"].startswith("kafka://")
    assert "JOURNEY_WEB_HOST" not in data, "per pod, set in the StatefulSet"

    pod_labels = objects["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("HeadlessService", "Service"):
        spec = objects[kind]["spec"]
        assert spec["selector"].items() <= pod_labels.items(), kind
        (port,) = spec["ports"]
        assert port["name"] == "http" and port["port"] == WEB_PORT, kind
    assert objects["HeadlessService"]["spec"]["clusterIP"] == "None"
    assert objects["Service"]["spec"].get("type", "ClusterIP") == "ClusterIP"

    pdb = objects["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    monitor = objects["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint.get("path", "/metrics") == "/metrics"
    # The alert rules select job="journey-processor".
    assert pod_labels[monitor["spec"]["jobLabel"]] == "journey-processor"


def test_k8s_secrets_are_mounted_files_and_the_network_is_closed(yaml: ModuleType) -> None:
    objects = k8s_objects(yaml)
    secret = objects["Secret"]
    pod = objects["StatefulSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    (name,) = [n for n, v in volumes.items() if "secret" in v]
    assert volumes[name]["secret"]["secretName"] == secret["metadata"]["name"]
    assert mounts[name]["readOnly"] is True
    env = {e["name"]: e for e in container["env"]}
    for variable, key in (
        ("JOURNEY_API_TOKEN_FILE", "api-token"),
        ("JOURNEY_KAFKA_SASL_PASSWORD_FILE", "kafka-sasl-password"),
    ):
        assert env[variable]["value"] == f"{mounts[name]['mountPath']}/{key}"
        assert key in secret["stringData"]
    # No secret value travels as a variable, in the pod or in the ConfigMap.
    config = objects["ConfigMap"]["data"]
    for variable in ("JOURNEY_API_TOKEN", "JOURNEY_KAFKA_SASL_PASSWORD"):
        assert variable not in env and variable not in config
    assert config["JOURNEY_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"

    policy = objects["NetworkPolicy"]
    pod_labels = objects["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = [f["podSelector"]["matchLabels"] for f in ingress["from"] if "podSelector" in f]
    assert any(labels.items() <= pod_labels.items() for labels in peers)


def test_compose_workers_get_the_api_token_as_a_secret_file(yaml: ModuleType) -> None:
    compose = load_yaml(yaml, COMPOSE)
    for name, service in compose_workers(compose).items():
        env = environment(service)
        assert "JOURNEY_API_TOKEN" not in env, name
        path = env["JOURNEY_API_TOKEN_FILE"]
        (secret,) = [s for s in service["secrets"] if path == f"/run/secrets/{s}"]
        assert secret in compose["secrets"], name
