"""Kubernetes manifests: every overlay renders with kustomize and validates offline against the Kubernetes
1.37 schemas, and the manifests agree with the code: selectors, ports, config keys, probe paths, Ingress
areas, hardening, no secret in the repository, and the alert rules Prometheus loads."""
import importlib
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from nameko.containers import ServiceContainer

from ipvkit.http import ApiHandler, OpsHandler

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
LAYERS = ("base", "overlays/dev", "overlays/prod")
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def service_table():
    """{name: (port, [areas])} from scripts/services.sh, the table the local ingress is built from."""
    text = (ROOT / "scripts/services.sh").read_text()
    rows = re.search(r"SERVICES=\((.*?)\n\)", text, re.S).group(1)
    table = {}
    for row in re.findall(r'"([^"]+)"', rows):
        name, port, *areas = row.split()
        table[name] = (int(port), areas)
    return table


SERVICES = service_table()
# Services whose code has landed; the manifests must exist for every service either way.
CODED = [name for name in SERVICES if (ROOT / f"services/{name}/service.py").exists()]


def kustomize(path):
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(path)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(path)]
    else:
        pytest.fail("neither kubectl nor kustomize is installed: "
                    "`go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0` gives one")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=LAYERS)
def docs(request):
    return kustomize(K8S / request.param)


def of_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs):
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_config_vars(name):
    text = (ROOT / f"services/{name}/config.yaml").read_text()
    return dict(re.findall(r"\$\{([A-Z0-9_]+):([^}]*)\}", text))


def service_class(name):
    return importlib.import_module(f"services.{name}.service").SERVICE


def test_every_manifest_validates_against_the_kubernetes_schemas(docs):
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    assert not of_kind(docs, "Secret"), "secret values belong outside the repository"


def test_selectors_and_references_point_at_real_pods(docs):
    pods = [(w["metadata"]["name"], t["metadata"]["labels"]) for w, t in pod_specs(docs)]
    for workload, template in pod_specs(docs):
        if workload["kind"] != "Job":
            assert matches(workload["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    for name, service in of_kind(docs, "Service").items():
        assert [p for p, labels in pods if matches(service["spec"]["selector"], labels)] == [name]
    for name, pdb in of_kind(docs, "PodDisruptionBudget").items():
        assert [p for p, labels in pods if matches(pdb["spec"]["selector"]["matchLabels"], labels)] == [name]
    deployments = of_kind(docs, "Deployment")
    for hpa in of_kind(docs, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    for policy in of_kind(docs, "NetworkPolicy").values():
        selectors = [policy["spec"]["podSelector"].get("matchLabels")]
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            peers = rule.get("from", []) + rule.get("to", [])
            selectors += [p["podSelector"].get("matchLabels") for p in peers
                          if "podSelector" in p and "namespaceSelector" not in p]
        for selector in filter(None, selectors):  # {} selects every pod: that is the default deny
            assert any(matches(selector, labels) for _, labels in pods), (policy["metadata"]["name"], selector)


def test_each_service_has_deployment_service_hpa_pdb_on_its_own_port(docs):
    kinds = {kind: of_kind(docs, kind) for kind in
             ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")}
    for name, (port, _) in SERVICES.items():
        assert all(name in found for found in kinds.values()), name
        template = kinds["Deployment"][name]["spec"]["template"]
        (container,) = template["spec"]["containers"]
        assert container["args"] == [name]  # deploy/Containerfile runs services.<name>.service:SERVICE
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        env = {e["name"]: e for e in container["env"]}
        assert env[f"{name.upper()}_HTTP"]["value"] == f"0.0.0.0:{port}"
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert kinds["Service"][name]["spec"]["ports"][0]["targetPort"] == "http"
        if name in CODED:
            assert service_config_vars(name)[f"{name.upper()}_HTTP"] == f"127.0.0.1:{port}"


@pytest.mark.parametrize("name", CODED)
def test_every_config_key_a_service_reads_is_provided(docs, name):
    (container,) = of_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
    provided = {e["name"] for e in container["env"]}
    config_maps = of_kind(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        (generated,) = [cm for cm_name, cm in config_maps.items() if cm_name.startswith(ref + "-") or cm_name == ref]
        provided |= set(generated["data"])
    missing = set(service_config_vars(name)) - provided
    assert not missing, f"services/{name}/config.yaml reads {sorted(missing)}, which the Deployment does not set"


@pytest.mark.parametrize("name", CODED)
def test_probes_and_ingress_paths_match_the_code(docs, name):
    entrypoints = ServiceContainer(service_class(name), {"AMQP_URI": "memory://"}).entrypoints
    ops_paths = {ep.url for ep in entrypoints if isinstance(ep, OpsHandler)}
    (container,) = of_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"/readyz", "/healthz", "/metrics"} <= ops_paths

    routed = {}
    for ingress in of_kind(docs, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                routed[path["path"]] = path["backend"]["service"]["name"]
    areas = {url.split("/")[3] for url in (ep.url for ep in entrypoints if isinstance(ep, ApiHandler))}
    assert areas == set(SERVICES[name][1])  # the code serves exactly the areas the table gives it
    for area in areas:
        assert routed[f"/api/v1/{area}"] == name


def test_ingress_routes_every_area_of_the_service_table_and_nothing_else(docs):
    expected = {f"/api/v1/{area}": name for name, (_, areas) in SERVICES.items() for area in areas}
    expected["/"] = "portal"  # the server-rendered pages (services/portal)
    # `ipv-api` and `ipv-documents` (uploads, with their body limit); `keycloak` carries the realm's pages
    got = {p["path"]: p["backend"]["service"]["name"] for name in ("ipv-api", "ipv-documents")
           for r in of_kind(docs, "Ingress")[name]["spec"]["rules"] for p in r["http"]["paths"]}
    assert got == expected


def test_uploads_get_the_documents_body_limit_at_the_ingress_and_no_other_route_does(docs):
    ingresses = of_kind(docs, "Ingress")
    limit = int(next(cm for name, cm in of_kind(docs, "ConfigMap").items()
                     if name.startswith("ipv-config"))["data"]["DOCUMENT_MAX_BYTES"])
    annotations = ingresses["ipv-documents"]["metadata"]["annotations"]
    body_mb = int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m"))
    assert limit < body_mb * 1024 * 1024 <= limit + 2 * 1024 * 1024  # the file plus its form, not much more
    assert [p["path"] for r in ingresses["ipv-documents"]["spec"]["rules"] for p in r["http"]["paths"]] == [
        "/api/v1/documents"]
    # every other route keeps the 1 MB the controller (and the API's own 64 KiB) allow
    assert ingresses["ipv-api"]["metadata"].get("annotations", {}).get(
        "nginx.ingress.kubernetes.io/proxy-body-size", "1m") == "1m"
    hosts = {name: [r.get("host") for r in ingress["spec"]["rules"]] for name, ingress in ingresses.items()}
    assert hosts["ipv-documents"] == hosts["ipv-api"]  # the overlays give both the same public host


def test_pods_are_hardened(docs):
    for workload, template in pod_specs(docs):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        if workload["metadata"]["name"] not in ("prometheus", "rabbitmq"):  # the pods that call the API (discovery)
            assert spec["automountServiceAccountToken"] is False, workload["metadata"]["name"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            security, resources = container["securityContext"], container["resources"]
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
            if workload["metadata"]["name"] in SERVICES:
                assert security["readOnlyRootFilesystem"] is True


def test_secrets_the_manifests_need_are_documented(docs):
    guide = (ROOT / "docs/operations.md").read_text()
    names = set()
    for _, template in pod_specs(docs):
        for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    names.add((ref["name"], ref["key"]))
    for name, key in names:
        assert f"`{name}`" in guide and f"`{key}`" in guide, (name, key)


def test_prometheus_config_map_holds_the_tested_rules_and_a_valid_config(docs, tmp_path):
    """The discovery itself is exercised by test_prometheus.py through file discovery."""
    (config_map,) = [cm for name, cm in of_kind(docs, "ConfigMap").items() if name.startswith("prometheus-")]
    rules = (K8S / "base/monitoring/alerts.yml").read_text()
    assert config_map["data"]["alerts.yml"] == rules
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]  # where the Deployment mounts the map
    (tmp_path / "alerts.yml").write_text(rules)
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    for job in config["scrape_configs"]:
        # Debian's promtool is built without Kubernetes discovery: check the rest of each job.
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "config",
                           str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rabbitmq_is_a_three_node_cluster_that_services_fail_over_across(docs):
    if any(d["metadata"].get("namespace") != "ipv-dev" for d in docs if d["kind"] == "StatefulSet"):
        (prod_like,) = [w for w, _ in pod_specs(docs) if w["metadata"]["name"] == "rabbitmq"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" in \
            prod_like["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (rabbitmq,) = [w for w, _ in pod_specs(docs) if w["metadata"]["name"] == "rabbitmq"]
    spec, labels = rabbitmq["spec"], rabbitmq["spec"]["template"]["metadata"]["labels"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    pod = spec["template"]["spec"]
    apart = pod["affinity"]["podAntiAffinity"]
    # Required in base and prod; dev (a small cluster, maybe one machine) only prefers it.
    (term,) = apart.get("requiredDuringSchedulingIgnoredDuringExecution") or [
        t["podAffinityTerm"] for t in apart["preferredDuringSchedulingIgnoredDuringExecution"]]
    assert term["topologyKey"] == "kubernetes.io/hostname" and matches(term["labelSelector"]["matchLabels"], labels)
    pdb = of_kind(docs, "PodDisruptionBudget")["rabbitmq"]["spec"]
    assert pdb["maxUnavailable"] == 1 and matches(pdb["selector"]["matchLabels"], labels)

    config = of_kind(docs, "ConfigMap")["rabbitmq-config"]["data"]
    settings = dict(line.split(" = ", 1) for line in config["rabbitmq.conf"].splitlines()
                    if line and not line.startswith("#"))
    assert settings["cluster_formation.peer_discovery_backend"] == "rabbit_peer_discovery_k8s"
    assert "rabbitmq_peer_discovery_k8s" in config["enabled_plugins"] and "rabbitmq_prometheus" in config["enabled_plugins"]
    service = of_kind(docs, "Service")[settings["cluster_formation.k8s.service_name"]]
    assert service["spec"]["publishNotReadyAddresses"] is True and service["spec"]["clusterIP"] == "None"
    # The node names are the pods' DNS names under that Service, which is what the services connect to.
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RABBITMQ_NODENAME"] == "rabbit@$(MY_POD_NAME)" + settings["cluster_formation.k8s.hostname_suffix"]
    nodes = [f"rabbitmq-{i}{settings['cluster_formation.k8s.hostname_suffix']}:5672" for i in range(3)]
    for name in SERVICES:
        deployment = of_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]
        uri = {e["name"]: e.get("value") for c in deployment["containers"] for e in c.get("env", [])}.get("AMQP_URI")
        if uri is not None:
            assert [u.split("@")[1].rstrip("/") for u in uri.split(";")] == nodes, name

    # Discovery may read the Service's Endpoints, with the ServiceAccount the pods run as, and nothing else.
    role = of_kind(docs, "Role")["rabbitmq-peer-discovery"]
    assert {"resources": ["endpoints"], "verbs": ["get"], "apiGroups": [""]} in role["rules"]
    binding = of_kind(docs, "RoleBinding")["rabbitmq-peer-discovery"]
    assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("ServiceAccount", pod["serviceAccountName"])]
    # The nodes may reach each other (epmd, distribution) through the NetworkPolicy.
    allowed = {(rule["from"][0]["podSelector"]["matchLabels"].get("app.kubernetes.io/name"), port["port"])
               for rule in of_kind(docs, "NetworkPolicy")["rabbitmq"]["spec"]["ingress"] for port in rule["ports"]}
    assert {("rabbitmq", 4369), ("rabbitmq", 25672)} <= allowed
