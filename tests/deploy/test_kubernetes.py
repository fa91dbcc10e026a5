"""deploy/k8s, the kustomize base, checked without a cluster: it is complete, and
everything it names (images, commands, settings, probe paths, Secrets, Services)
exists in the project or is made by the operators it relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from services import bootstrap
from shared.config import load_settings
from tests.deploy.support import (
    IMAGE,
    K8S_DIR,
    SETTING_NAMES,
    check_partsflow_command,
    k8s_documents,
    load_yaml,
    load_yaml_documents,
    of_kind,
    pod_containers,
)

SERVICES = list(bootstrap.SERVICES)


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return load_yaml(K8S_DIR / "kustomization.yaml")


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return k8s_documents()


@pytest.fixture(scope="module")
def deployments(documents) -> dict[str, dict[str, Any]]:
    return of_kind(documents, "Deployment")


def generated(kustomization: dict[str, Any], kind: str) -> dict[str, dict[str, str]]:
    """name -> {key: value} of the Secrets or ConfigMaps the kustomization generates."""
    key = "secretGenerator" if kind == "Secret" else "configMapGenerator"
    return {
        generator["name"]: dict(literal.split("=", 1) for literal in generator["literals"])
        for generator in kustomization[key]
    }


def operator_secrets(documents: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The Secrets the operators write, with the keys they put in them."""
    secrets = {}
    for name in of_kind(documents, "RabbitmqCluster"):
        secrets[f"{name}-default-user"] = {"username", "password", "host", "port"}
    for name in of_kind(documents, "Cluster"):
        secrets[f"{name}-app"] = {"username", "password", "host", "port", "dbname", "uri"}
    return secrets


class TestTheKustomization:
    def test_it_lists_every_file_and_only_files_that_exist(self, kustomization) -> None:
        files = {p.name for p in K8S_DIR.iterdir() if p.suffix in (".yaml", ".yml")}
        assert set(kustomization["resources"]) == files - {"kustomization.yaml"}
        assert files == {p.name for p in K8S_DIR.iterdir()}

    def test_every_document_has_a_kind_and_a_name(self, documents) -> None:
        for document in documents:
            assert document["apiVersion"] and document["kind"] and document["metadata"]["name"]

    def test_the_image_is_the_project_image(self, kustomization, deployments) -> None:
        assert [image["name"] for image in kustomization["images"]] == [IMAGE]
        for deployment in deployments.values():
            for container in pod_containers(deployment):
                assert container["image"] == IMAGE

    @pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
    def test_kustomize_builds_it(self) -> None:
        built = subprocess.run(
            ["kubectl", "kustomize", str(K8S_DIR)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert built.returncode == 0, built.stderr
        kinds = re.findall(r"^kind: (\w+)$", built.stdout, re.M)
        assert sorted(set(kinds)) == sorted(
            {
                "Namespace",
                "ConfigMap",
                "Secret",
                "Service",
                "Deployment",
                "HorizontalPodAutoscaler",
                "Ingress",
                "Cluster",
                "RabbitmqCluster",
            }
        )
        assert f"image: {IMAGE}:" in built.stdout


class TestServers:
    def test_rabbitmq_is_a_cluster_of_the_rabbitmq_operator(self, documents) -> None:
        [cluster] = of_kind(documents, "RabbitmqCluster").values()
        assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
        # Quorum queues keep a majority through the loss of one node.
        assert cluster["spec"]["replicas"] >= 3
        assert cluster["spec"]["persistence"]["storage"]

    def test_postgres_is_a_cloudnativepg_cluster_with_a_database_per_service(
        self, documents
    ) -> None:
        [cluster] = of_kind(documents, "Cluster").values()
        assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
        assert cluster["spec"]["instances"] >= 2
        initdb = cluster["spec"]["bootstrap"]["initdb"]
        databases = {initdb["database"]}
        for statement in initdb["postInitSQL"]:
            [(name, owner)] = re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", statement)
            assert owner == initdb["owner"]
            databases.add(name)
        assert databases == set(SERVICES)


class TestWorkloads:
    def test_each_service_has_a_web_and_a_worker_deployment(self, deployments) -> None:
        assert set(deployments) == {f"{s}-{role}" for s in SERVICES for role in ("web", "worker")}

    def test_every_container_runs_a_real_partsflow_command(self, deployments) -> None:
        for name, deployment in deployments.items():
            service, role = name.rsplit("-", 1)
            init, main = list(pod_containers(deployment))
            check_partsflow_command(init["args"])
            check_partsflow_command(main["args"])
            assert init["args"] == ["partsflow", "db", "upgrade", service]
            assert main["args"][1:3] == [role, service]

    def test_every_container_has_resources_and_runs_locked_down(self, deployments) -> None:
        for deployment in deployments.values():
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            for container in pod_containers(deployment):
                resources = container["resources"]
                assert resources["requests"]["cpu"] and resources["requests"]["memory"]
                assert resources["limits"]["memory"]
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts

    def test_web_servers_are_probed_on_their_own_pages(self, deployments, served) -> None:
        for service in SERVICES:
            [web] = deployments[f"{service}-web"]["spec"]["template"]["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for p in web["ports"]}
            bind = web["args"][web["args"].index("--bind") + 1]
            assert ports == {"http": int(bind.rsplit(":", 1)[1])}
            probes = {kind: web[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
            assert probes["livenessProbe"]["path"] == f"/{service}/healthz"
            assert probes["readinessProbe"]["path"] == f"/{service}/readyz"
            for probe in [*probes.values(), web["startupProbe"]["httpGet"]]:
                assert probe["port"] == "http"
                assert served(probe["path"]) == 200

    def test_workers_scale_on_an_autoscaler_that_owns_their_replica_count(
        self, documents, deployments
    ) -> None:
        autoscalers = of_kind(documents, "HorizontalPodAutoscaler")
        targets = {}
        for autoscaler in autoscalers.values():
            assert autoscaler["apiVersion"] == "autoscaling/v2"
            target = autoscaler["spec"]["scaleTargetRef"]
            assert target["kind"] == "Deployment"
            targets[target["name"]] = autoscaler["spec"]
        assert set(targets) == {f"{s}-worker" for s in SERVICES}
        for name, spec in targets.items():
            assert 1 <= spec["minReplicas"] < spec["maxReplicas"]
            assert "replicas" not in deployments[name]["spec"]

    def test_services_select_the_web_pods(self, documents, deployments) -> None:
        services = of_kind(documents, "Service")
        assert set(services) == {f"{s}-web" for s in SERVICES}
        for name, service in services.items():
            labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
            assert service["spec"]["selector"].items() <= labels.items()
            assert (
                deployments[name]["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
            )
            [port] = service["spec"]["ports"]
            assert port["targetPort"] == "http"


class TestSettings:
    def test_every_variable_is_a_setting_or_feeds_one(self, kustomization, deployments) -> None:
        for name in generated(kustomization, "ConfigMap")["partsflow-config"]:
            assert name in SETTING_NAMES
        assert set(generated(kustomization, "Secret")["partsflow-secrets"]) == {
            "PARTSFLOW_SECRET_KEY"
        }
        for deployment in deployments.values():
            for container in pod_containers(deployment):
                defined: set[str] = set()
                for variable in container["env"]:
                    name = variable["name"]
                    for reference in re.findall(r"\$\((\w+)\)", variable.get("value", "")):
                        assert reference in defined, (name, reference)
                    if name.startswith("PARTSFLOW_"):
                        assert name in SETTING_NAMES, name
                    else:
                        assert "valueFrom" in variable, name
                    defined.add(name)

    def test_secrets_come_from_the_operators_or_the_generators(
        self, kustomization, documents, deployments
    ) -> None:
        made_by_operators = operator_secrets(documents)
        generated_secrets = generated(kustomization, "Secret")
        configmaps = generated(kustomization, "ConfigMap")
        for deployment in deployments.values():
            pod = deployment["spec"]["template"]["spec"]
            for volume in pod["volumes"]:
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in generated_secrets
            for container in pod_containers(deployment):
                for source in container["envFrom"]:
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in generated_secrets
                    else:
                        assert source["configMapRef"]["name"] in configmaps
                for variable in container["env"]:
                    if "valueFrom" in variable:
                        ref = variable["valueFrom"]["secretKeyRef"]
                        assert ref["key"] in made_by_operators[ref["name"]], ref

    def test_no_secret_value_is_written_in_the_base(self, kustomization) -> None:
        secrets = generated(kustomization, "Secret")
        assert secrets["partsflow-secrets"]["PARTSFLOW_SECRET_KEY"] == ""
        assert secrets["partsflow-users"] == {"users.json": '{"users": {}}'}

    def test_each_pod_gets_valid_settings_for_its_own_service(
        self, kustomization, documents, deployments
    ) -> None:
        """With the operators' Secrets and a filled-in secret key, each container's
        environment loads, and names the cluster's broker and its own database."""
        [rabbitmq] = of_kind(documents, "RabbitmqCluster")
        [postgres] = of_kind(documents, "Cluster")
        config = generated(kustomization, "ConfigMap")["partsflow-config"]
        for name, deployment in deployments.items():
            service = name.rsplit("-", 1)[0]
            for container in pod_containers(deployment):
                environment = {**config, "PARTSFLOW_SECRET_KEY": "k" * 48}
                for variable in container["env"]:
                    if "valueFrom" in variable:
                        value = f"generated-{variable['valueFrom']['secretKeyRef']['key']}"
                    else:
                        value = re.sub(r"\$\((\w+)\)", lookup(environment), variable["value"])
                    environment[variable["name"]] = value
                settings = load_settings(environ=environment)
                assert settings.broker_url == (
                    f"amqp://generated-username:generated-password@{rabbitmq}:5672//"
                )
                assert settings.db_url(service) == (
                    "postgresql://generated-username:generated-password"
                    f"@{postgres}-rw:5432/{service}"
                )
                others = {f"PARTSFLOW_{s.upper()}_DB_URL" for s in SERVICES if s != service}
                assert not others & set(environment), "a pod sees only its own database"


def lookup(environment: dict[str, str]) -> Callable[[re.Match[str]], str]:
    """Kubernetes's $(NAME): the value of a variable defined earlier in the list."""
    return lambda match: environment[match[1]]


class TestIngress:
    def test_it_serves_the_three_prefixes_and_the_rest_from_tracking(self, documents) -> None:
        [ingress] = of_kind(documents, "Ingress").values()
        services = of_kind(documents, "Service")
        [rule] = ingress["spec"]["rules"]
        routes = {}
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix"
            backend = path["backend"]["service"]
            port_names = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
            assert backend["port"]["name"] in port_names
            routes[path["path"]] = backend["name"]
        assert routes == {
            "/inventory": "inventory-web",
            "/shipments": "shipments-web",
            "/tracking": "tracking-web",
            "/": "tracking-web",
        }

    def test_every_manifest_file_parses(self) -> None:
        for path in sorted(K8S_DIR.glob("*.yaml")):
            assert load_yaml_documents(path), path
