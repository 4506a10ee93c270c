"""The Kubernetes deployment (deploy/k8s), rendered and checked offline.

Each variant is rendered by ``kubectl kustomize`` (the Kustomize that kubectl carries) and
every resource is validated against the Kubernetes JSON schemas that the PyPI package
``kubernetes-validate`` bundles (strict: unknown fields fail), or for KEDA's kinds against
the schemas under ``deploy/k8s/schemas`` (see its README). No network, no cluster.

Then what a platform team checks before it deploys: every ``CXR_*`` variable is a real
setting, secrets only by reference, one image, ports and names that agree with each other
and with the code (queues, metric, CLI commands, the task time limit).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from worker.celery_app import QUEUES
from worker.settings import SECRET_FIELDS, URL_FIELDS, Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
#: The oldest Kubernetes release the manifests must validate against (every field used
#: exists there), and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.28", kubernetes_validate.utils.latest_version())
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
}
SECRET_NAME = "cxr-triage-secrets"
#: The Secret's keys, documented in the README ("Scaling out"), and the setting each feeds.
SECRET_KEYS = {
    "database-url": "CXR_DATABASE_URL",
    "broker-url": "CXR_BROKER_URL",
    "flower-basic-auth": "CXR_FLOWER_BASIC_AUTH",
    "web-password": "CXR_WEB_PASSWORD",
    "web-session-secret": "CXR_WEB_SESSION_SECRET",
}
SECRET_SETTINGS = {f"CXR_{name.upper()}" for name in SECRET_FIELDS | URL_FIELDS}
SETTINGS = {f"CXR_{name.upper()}" for name in Settings.model_fields} | {"CXR_SETTINGS_FILE"}
WORKLOADS = ("Deployment", "Job")
COMPONENTS = ("worker", "watcher", "web", "listen", "deliver", "flower", "migrate")


def render(kustomization: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _with_component(tmp_path: Path, component: str) -> Path:
    """A throwaway kustomization: the base plus one component (paths relative: Kustomize
    refuses absolute ones)."""
    folder = tmp_path / component
    folder.mkdir()
    base = os.path.relpath(K8S / "base", folder)
    part = os.path.relpath(K8S / "components" / component, folder)
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{base}]\ncomponents: [{part}]\n"
    )
    return folder


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("kustomize")
    return {
        "base": render(K8S / "base"),
        "example": render(K8S / "overlays" / "example"),
        "base+keda": render(_with_component(tmp, "keda")),
        "base+hpa": render(_with_component(tmp, "hpa-prometheus")),
    }


def _all(variants: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, docs in variants.items():
        for doc in docs:
            yield name, doc


def _pod_specs(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in WORKLOADS:
        return doc["spec"]["template"]["spec"]
    return None


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_specs(doc)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_variant_renders_every_component(variants: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in variants.items():
        workloads = [d for d in docs if d["kind"] in WORKLOADS]
        found = {
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            for d in workloads
        }
        assert found == set(COMPONENTS), name
        kinds = {d["kind"] for d in docs}
        assert {"PodDisruptionBudget", "PersistentVolumeClaim", "NetworkPolicy"} <= kinds, name
    assert "ScaledObject" in {d["kind"] for d in variants["example"]}
    assert "HorizontalPodAutoscaler" in {d["kind"] for d in variants["base+hpa"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_validates_against_the_kubernetes_schemas(
    variants: dict[str, list[dict[str, Any]]], version: str
) -> None:
    checked = 0
    for name, doc in _all(variants):
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[key]).read_text())
            jsonschema.Draft202012Validator(schema).validate(doc)
        else:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                raise AssertionError(
                    f"{name}: {doc['kind']}/{doc['metadata']['name']}: {path}: {error.message}"
                ) from error
        checked += 1
    assert checked > 60


def test_a_typo_fails_validation(variants: dict[str, list[dict[str, Any]]]) -> None:
    """The validators can fail: a misspelt field and a wrong type are both refused."""
    worker = _by_kind(variants["base"], "Deployment")["cxr-triage-worker"]
    typo = json.loads(json.dumps(worker))
    typo["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[0], strict=True)
    scaled = _by_kind(variants["example"], "ScaledObject")["cxr-triage-worker"]
    wrong = json.loads(json.dumps(scaled))
    wrong["spec"]["minReplicaCount"] = "1"
    schema = json.loads(
        (K8S / "schemas" / CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]).read_text()
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(wrong)


def test_every_variable_is_a_real_setting_and_secrets_come_by_reference(
    variants: dict[str, list[dict[str, Any]]],
) -> None:
    for name, docs in variants.items():
        config = _by_kind(docs, "ConfigMap")
        for map_name, config_map in config.items():
            for key in config_map.get("data", {}):
                assert key in SETTINGS, f"{name}: ConfigMap {map_name}: {key} is no setting"
                assert key not in SECRET_SETTINGS, f"{name}: {key} in a ConfigMap"
        for doc in docs:
            for container in _containers(doc):
                for ref in container.get("envFrom", []):
                    assert set(ref) == {"configMapRef"}, "settings from the ConfigMap only"
                    assert ref["configMapRef"]["name"] in config
                for variable in container.get("env", []):
                    key = variable["name"]
                    assert key in SETTINGS, (
                        f"{name}: {doc['metadata']['name']}: {key} is no setting"
                    )
                    if key in SECRET_SETTINGS:
                        assert "value" not in variable, f"{key} must come from the Secret"
                        ref = variable["valueFrom"]["secretKeyRef"]
                        assert ref["name"] == SECRET_NAME
                        assert SECRET_KEYS[ref["key"]] == key
                    elif "valueFrom" in variable:
                        raise AssertionError(f"{key}: only secrets come from elsewhere")
        assert "Secret" not in {d["kind"] for d in docs}, "Secrets are created from the vault"


def test_no_credential_in_any_manifest() -> None:
    """No password in a URL, no key=value secret, no private key, in any file under deploy/."""
    patterns = [
        re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s/]+@", re.IGNORECASE),
        re.compile(
            r"(password|passwd|secret|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/=_-]{6,}", re.IGNORECASE
        ),
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    ]
    for path in (REPO / "deploy").rglob("*"):
        if path.is_file():
            text = path.read_text()
            for pattern in patterns:
                assert not pattern.search(text), f"{path}: {pattern.pattern}"


def test_one_image_hardened_pods_and_sized_containers(
    variants: dict[str, list[dict[str, Any]]],
) -> None:
    for name, docs in variants.items():
        images = {c["image"] for d in docs for c in _containers(d)}
        assert len(images) == 1, f"{name}: {images}"
        for doc in docs:
            spec = _pod_specs(doc)
            if spec is None:
                continue
            assert spec["serviceAccountName"] == "cxr-triage"
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for container in _containers(doc):
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False
                assert security["readOnlyRootFilesystem"] is True
                assert security["capabilities"] == {"drop": ["ALL"]}
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
                assert "memory" in resources["limits"], container["name"]
    assert next(iter({c["image"] for d in variants["example"] for c in _containers(d)})) == (
        "registry.example.org/imaging/cxr-triage:0.1.0"
    )


def _env(container: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    values = dict(config)
    values.update({v["name"]: v.get("value", "") for v in container.get("env", [])})
    return values


def test_ports_probes_and_names_agree(variants: dict[str, list[dict[str, Any]]]) -> None:
    from worker.cli.app import app

    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    }
    defaults = Settings()
    for name, docs in variants.items():
        deployments = _by_kind(docs, "Deployment")
        config = _by_kind(docs, "ConfigMap")["cxr-triage-settings"]["data"]
        pods = {
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in docs
            if d["kind"] in WORKLOADS
        }
        for doc in pods.values():
            for container in _containers(doc):
                command = container["command"]
                if command[0] == "cxr-triage":
                    assert command[1] in commands | {"db"}, command
        worker = pods["worker"]["spec"]["template"]["spec"]
        (main,) = worker["containers"]
        env = _env(main, config)
        assert main["ports"][0]["containerPort"] == int(env["CXR_METRICS_PORT"])
        assert env["CXR_METRICS_ADDRESS"] == "0.0.0.0"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["exec"]["command"] == ["cxr-triage", "status", "--ready"]
        assert worker["terminationGracePeriodSeconds"] > defaults.task_time_limit_s
        web = pods["web"]["spec"]["template"]["spec"]["containers"][0]
        assert web["ports"][0]["containerPort"] == int(
            web["command"][web["command"].index("--port") + 1]
        )
        listen = pods["listen"]["spec"]["template"]["spec"]["containers"][0]
        assert listen["ports"][0]["containerPort"] == int(_env(listen, config)["CXR_LISTEN_PORT"])
        flower = pods["flower"]["spec"]["template"]["spec"]["containers"][0]
        assert flower["ports"][0]["containerPort"] == int(_env(flower, config)["CXR_FLOWER_PORT"])
        assert pods["watcher"]["spec"]["replicas"] == 2, "one active watcher and a standby"
        # every claim, selector and target names something that exists
        claims = set(_by_kind(docs, "PersistentVolumeClaim"))
        for doc in pods.values():
            for volume in doc["spec"]["template"]["spec"].get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims
        labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
        for kind in ("Service", "PodDisruptionBudget"):
            for target_name, target in _by_kind(docs, kind).items():
                selector = target["spec"]["selector"]
                selector = selector.get("matchLabels", selector)
                matched = [lab for lab in labels if selector.items() <= lab.items()]
                assert len(matched) == 1, f"{name}: {kind} {target_name} selects {len(matched)}"
                if kind == "Service":
                    pod = next(
                        d
                        for d in deployments.values()
                        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                    )
                    ports = {
                        p["name"]
                        for c in pod["spec"]["template"]["spec"]["containers"]
                        for p in c.get("ports", [])
                    }
                    assert {p["targetPort"] for p in target["spec"]["ports"]} <= ports
        for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
            for scaler in _by_kind(docs, kind).values():
                assert scaler["spec"]["scaleTargetRef"]["name"] == "cxr-triage-worker"
                assert "replicas" not in deployments["cxr-triage-worker"]["spec"], "one owner"
        for scaled in _by_kind(docs, "ScaledObject").values():
            assert {t["metadata"]["queueName"] for t in scaled["spec"]["triggers"]} == set(QUEUES)
        for hpa in _by_kind(docs, "HorizontalPodAutoscaler").values():
            (metric,) = hpa["spec"]["metrics"]
            assert metric["external"]["metric"]["name"] == "cxr_triage_rows_waiting"
            assert "cxr_triage_rows_waiting" in (REPO / "worker" / "prometheus.py").read_text()
