"""deploy/kubernetes: the kustomizations build, every object is valid for Kubernetes and KEDA, and says what relance
needs (its real settings and commands, two database roles, unprivileged containers, probes, autoscaling bounds).

Kubernetes objects are validated with kubernetes-validate's bundled schemas (offline, strict: an unknown field is an
error); KEDA's against the OpenAPI schemas of the CRDs vendored from kedacore/keda's config/crd/bases in
tests/deploy/schemas, made strict the same way (an unknown field, which the API server would prune, is an error).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from services.cli.app import build_parser
from shared.config import ConfigurationError, Settings, known_variables, load_settings
from tests.deploy import kustomize
from tests.deploy.metrics import metric_names, series

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUSTOMIZATIONS = {"base": KUBERNETES / "base", "production": KUBERNETES / "overlays" / "production"}
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests are meant for (newer ones accept them too)
KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")

# Commands that other work adds at the same time as these manifests: accepted until they exist.


# ---------------------------------------------------------------------------------------------------- helpers
@cache
def built(name: str) -> tuple[kustomize.Manifest, ...]:
    return tuple(kustomize.build(KUSTOMIZATIONS[name]))


def objects(name: str, kind: str | None = None) -> list[kustomize.Manifest]:
    return [copy.deepcopy(obj) for obj in built(name) if kind is None or obj["kind"] == kind]


def named(name: str, kind: str, object_name: str) -> kustomize.Manifest:
    [obj] = [obj for obj in objects(name, kind) if obj["metadata"]["name"] == object_name]
    return obj


def pod_spec(obj: kustomize.Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def workloads(name: str) -> Iterator[kustomize.Manifest]:
    yield from (obj for obj in built(name) if obj["kind"] in ("Deployment", "Job"))


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the fields (the API server would prune them)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {name: strict(value) for name, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@cache
def keda_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for file in KEDA_CRDS:
        crd = yaml.safe_load((SCHEMAS / file).read_text(encoding="utf-8"))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def validate(obj: kustomize.Manifest) -> None:
    """Raise if the object is not valid for Kubernetes (or for KEDA, for its kinds)."""
    if obj["apiVersion"].startswith("keda.sh/"):
        validator = keda_validators().get((obj["apiVersion"], obj["kind"]))
        assert validator is not None, f"no KEDA schema for {obj['apiVersion']} {obj['kind']}"
        validator.validate(obj)
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def config(name: str) -> dict[str, str]:
    data: dict[str, str] = named(name, "ConfigMap", "relance-config")["data"]
    return data


def secret(name: str, secret_name: str) -> dict[str, str]:
    data: dict[str, str] = named(name, "Secret", secret_name)["stringData"]
    return data


# ---------------------------------------------------------------------------------------------------- schemas
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_is_valid_for_kubernetes_and_keda(name: str) -> None:
    kinds = {obj["kind"] for obj in built(name)}
    assert {"Deployment", "Job", "ScaledObject", "TriggerAuthentication", "PodDisruptionBudget", "Service"} <= kinds
    for obj in built(name):
        try:
            validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']}: {exc}")


@pytest.mark.parametrize(
    ("kind", "object_name", "breakage"),
    [
        ("Deployment", "relance-ingest", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(port=9100)),
        ("Deployment", "relance-relay", lambda o: o["spec"].update(replicas="two")),
        ("Job", "relance-migrate", lambda o: o["spec"]["template"]["spec"].pop("containers")),
        ("ScaledObject", "relance-ingest", lambda o: o["spec"].update(minReplicaCount="one")),
        ("ScaledObject", "relance-relay", lambda o: o["spec"]["triggers"][0].update(kind="prometheus")),
        ("TriggerAuthentication", "relance-rabbitmq", lambda o: o["spec"]["secretTargetRef"][0].pop("key")),
    ],
    ids=["unknown-field", "wrong-type", "missing-field", "keda-wrong-type", "keda-unknown-field", "keda-missing"],
)
def test_a_broken_manifest_fails_the_validation(kind: str, object_name: str, breakage: Any) -> None:
    # Given a valid object of the production build
    obj = named("production", kind, object_name)
    validate(obj)
    # When it is broken in memory, then the validation fails
    breakage(obj)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(obj)


def test_the_builder_builds_what_kubectl_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: tests/deploy/kustomize.py is the only builder here")
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"Kustomize Version: v(\d+)", version)
    if found is None or int(found.group(1)) < 5:
        pytest.skip(f"kubectl's kustomize is older than v5 ({version.strip()!r}): it reads these files otherwise")
    for name, directory in KUSTOMIZATIONS.items():
        done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        theirs = {kustomize.key(obj): obj for obj in yaml.safe_load_all(done.stdout) if obj}
        ours = {kustomize.key(obj): obj for obj in built(name)}
        assert ours == theirs, name


def test_the_builder_refuses_a_kustomize_feature_it_lacks(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {team: ar}\n", encoding="utf-8")
    with pytest.raises(kustomize.KustomizeError, match="commonLabels"):
        kustomize.build(tmp_path)


# ---------------------------------------------------------------------------------------------------- relance's needs
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_relance_variable_is_a_setting_and_every_command_is_a_relance_command(name: str) -> None:
    known = known_variables()
    variables = set(config(name))
    for obj in objects(name, "Secret"):
        variables |= {key for key in obj["stringData"] if key.startswith("RELANCE_")}
    for obj in workloads(name):
        for container in kustomize.containers(obj):
            variables |= {env["name"] for env in container.get("env", [])}
            args = container["args"]
            try:
                build_parser().parse_args(args)
            except SystemExit:
                pytest.fail(f"{obj['metadata']['name']}: `relance {' '.join(args)}` is not a relance command")
    assert variables - known == set()


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_configmap_and_secret_a_pod_or_trigger_names_is_there(name: str) -> None:
    present = {(obj["kind"], obj["metadata"]["name"]) for obj in built(name)}
    for obj in workloads(name):
        spec = pod_spec(obj)
        for container in kustomize.containers(obj):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in present
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in present
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in present
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in present
    for authentication in objects(name, "TriggerAuthentication"):
        for ref in authentication["spec"]["secretTargetRef"]:
            assert ref["key"] in named(name, "Secret", ref["name"])["stringData"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_container_runs_unprivileged_on_a_read_only_root_with_a_writable_tmp(name: str) -> None:
    for obj in workloads(name):
        spec = pod_spec(obj)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0
        assert spec["automountServiceAccountToken"] is False
        empty_dirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for container in kustomize.containers(obj):
            where = f"{obj['metadata']['name']}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and tmp[0]["name"] in empty_dirs, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], where


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_workers_are_probed_on_their_health_endpoints_at_the_metrics_address(name: str) -> None:
    port = int(config(name)["RELANCE_METRICS_ADDRESS"].rpartition(":")[2])
    workers = [obj for obj in objects(name, "Deployment") if pod_spec(obj)["containers"][0]["args"][0] == "worker"]
    assert {obj["metadata"]["name"] for obj in workers} == {
        f"relance-{kind}" for kind in ("ingest", "escalation", "relay", "notifier", "webhook", "jobs")
    }
    for obj in workers:
        [container] = pod_spec(obj)["containers"]
        ports = {entry["name"]: entry["containerPort"] for entry in container["ports"]}
        assert ports["metrics"] == port
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        annotations = obj["spec"]["template"]["metadata"]["annotations"]
        assert (
            annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) in ports.values()
        )
        assert (
            named(name, "PodDisruptionBudget", obj["metadata"]["name"])["spec"]["selector"] == obj["spec"]["selector"]
        )


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_migration_runs_as_the_owner_and_everything_else_as_the_runtime_role(name: str) -> None:
    [job] = objects(name, "Job")
    [container] = pod_spec(job)["containers"]
    assert container["args"] == ["db", "upgrade", "--runtime-role", "relance_app"]
    secrets = {source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source}
    assert secrets == {"relance-database-owner"}
    assert "RELANCE_RUNTIME_ROLE_PASSWORD" in secret(name, "relance-database-owner")
    runtime = make_url(secret(name, "relance-database-runtime")["RELANCE_DATABASE_URL"])
    assert (
        runtime.username == "relance_app"
        and runtime.password == secret(name, "relance-database-owner")["RELANCE_RUNTIME_ROLE_PASSWORD"]
    )
    for obj in objects(name, "Deployment"):
        [container] = pod_spec(obj)["containers"]
        secrets = {source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source}
        assert "relance-database-runtime" in secrets and "relance-database-owner" not in secrets


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_keda_scales_the_pipeline_within_bounds_on_real_queues_and_metrics(name: str) -> None:
    scaled = {obj["spec"]["scaleTargetRef"]["name"]: obj for obj in objects(name, "ScaledObject")}
    assert set(scaled) == {"relance-ingest", "relance-notifier", "relance-escalation", "relance-relay"}
    authentications = {obj["metadata"]["name"] for obj in objects(name, "TriggerAuthentication")}
    defaults = Settings()
    for target, obj in scaled.items():
        spec = obj["spec"]
        # KEDA owns the replicas: a Deployment that set some would be reset by every `kubectl apply`
        assert "replicas" not in named(name, "Deployment", target)["spec"], target
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] and spec["cooldownPeriod"] >= 60, target
        for trigger in spec["triggers"]:
            if trigger["type"] == "rabbitmq":
                assert trigger["authenticationRef"]["name"] in authentications
            else:
                assert trigger["type"] == "prometheus", target
                names = metric_names(trigger["metadata"]["query"])
                assert names and names <= series(), (target, names - series())
    # Ingest: no more workers than partitions (the others would stand by), on the ingest queue and its partitions
    partitions = int(config(name)["RELANCE_INGEST_PARTITIONS"])
    assert scaled["relance-ingest"]["spec"]["maxReplicaCount"] <= partitions
    [ingest] = scaled["relance-ingest"]["spec"]["triggers"]
    pattern = re.compile(ingest["metadata"]["queueName"])
    queue = defaults.ingest_queue
    assert all(pattern.search(q) for q in [queue, *(f"{queue}.p{n}" for n in range(partitions))])
    assert not any(pattern.search(q) for q in (defaults.dead_letter_queue, f"{queue}.workers", f"{queue}.p0.owner"))
    [notifier] = scaled["relance-notifier"]["spec"]["triggers"]
    assert notifier["metadata"]["queueName"] == defaults.notifier_queue
    assert scaled["relance-relay"]["spec"]["minReplicaCount"] >= 2  # one relay may be restarting at any time


def test_production_runs_the_released_image_with_more_room() -> None:
    images = {c["image"] for obj in workloads("production") for c in kustomize.containers(obj)}
    assert len(images) == 1 and not images.pop().endswith(":latest")
    base, production = (
        named("base", "Deployment", "relance-ingest"),
        named("production", "Deployment", "relance-ingest"),
    )
    assert pod_spec(base)["containers"][0]["resources"] != pod_spec(production)["containers"][0]["resources"]
    assert named("production", "ScaledObject", "relance-ingest")["spec"]["minReplicaCount"] >= 2
    assert all(obj["metadata"]["namespace"] == "relance" for obj in built("production") if obj["kind"] != "Namespace")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_settings_each_pod_is_given_are_valid(name: str) -> None:
    # Given what each container's environment holds: its ConfigMaps, its Secrets and its own variables
    for obj in workloads(name):
        for container in kustomize.containers(obj):
            given: dict[str, str] = {}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    given |= named(name, "ConfigMap", source["configMapRef"]["name"])["data"]
                if "secretRef" in source:
                    given |= secret(name, source["secretRef"]["name"])
            given |= {env["name"]: env["value"] for env in container.get("env", [])}
            # When relance reads them, then they are valid settings (a wrong value would stop the pod at start-up)
            values = {key.removeprefix("RELANCE_").lower(): value for key, value in given.items()}
            try:
                settings = load_settings(**values)
            except ConfigurationError as exc:
                pytest.fail(f"{obj['metadata']['name']}: {exc}")
            assert settings.database_url is not None and settings.queue_type == "quorum"
