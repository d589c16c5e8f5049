"""ops/k8s: every core manifest validated by kubernetes-validate (the Kubernetes API's own JSON
schemas, strict: unknown fields are errors), the KEDA ScaledObject against KEDA's CRD schema, and
the wiring between them (names, probes, ports, the gauge)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamapp.observability.metrics import RECOMMENDED_WORKERS
from streamapp.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "ops" / "k8s"
KEDA_CRD = K8S / "schemas" / "keda.sh_scaledobjects.yaml"
#: the oldest Kubernetes the manifests are meant for (policy/v1 PDB, autoscaling/v2 HPA)
KUBERNETES_VERSION = "1.27.0"


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


CORE = ["configmap.yaml", "service-headless.yaml", "service.yaml", "statefulset.yaml", "pdb.yaml",
        "hpa.yaml", "secret.example.yaml"]  # fmt: skip


def _by_kind() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in [*CORE, "keda-scaledobject.yaml"]:
        for doc in _documents(name):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


@pytest.mark.parametrize("name", CORE)
def test_core_manifests_pass_the_kubernetes_schemas_strictly(name):
    for doc in _documents(name):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_what_a_cluster_would_refuse():
    """The check is not a YAML parse: a string port and an unknown field both fail."""
    sts = _by_kind()["StatefulSet/streamapp"]
    broken = yaml.safe_load(yaml.safe_dump(sts))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "6066"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(sts))
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text().split("\n---\n", 1)[-1])
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == "ScaledObject"
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


def _strict(schema: Any) -> Any:
    """Unknown fields are refused, as the API server prunes/refuses them for a structural CRD."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _validate_scaled_object(doc: dict[str, Any]) -> None:
    schema = _strict(_keda_schema())
    schema["properties"]["metadata"] = {"type": "object"}
    jsonschema.Draft7Validator(schema).validate(doc)


def test_keda_scaled_object_passes_kedas_crd_schema():
    doc = _documents("keda-scaledobject.yaml")[0]
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    _validate_scaled_object(doc)


def test_keda_schema_check_refuses_a_broken_scaled_object():
    doc = _documents("keda-scaledobject.yaml")[0]
    for breaking in (
        lambda d: d["spec"].pop("scaleTargetRef"),
        lambda d: d["spec"].__setitem__("maxReplicaCount", "eight"),
        lambda d: d["spec"]["triggers"][0]["metadata"].__setitem__("threshold", 1),  # must be a string
        lambda d: d["spec"].__setitem__("minReplicas", 1),  # HPA spelling, unknown to KEDA
    ):
        broken = yaml.safe_load(yaml.safe_dump(doc))
        breaking(broken)
        with pytest.raises(jsonschema.ValidationError):
            _validate_scaled_object(broken)


def test_manifests_wire_together():
    found = _by_kind()
    sts = found["StatefulSet/streamapp"]
    headless = found["Service/streamapp-workers"]
    pod = sts["spec"]["template"]
    container = pod["spec"]["containers"][0]
    labels = pod["metadata"]["labels"]
    # a RocksDB volume per worker, where STREAMAPP_DATA_DIR points
    env = {e["name"]: e.get("value") for e in container["env"]}
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == claim)
    assert env["STREAMAPP_DATA_DIR"] == mount["mountPath"]
    # the headless service gives the names workers forward to
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= labels.items()
    assert env["STREAMAPP_WEB_HOST"].startswith("$(POD_NAME)." + headless["metadata"]["name"] + ".")
    # probes on the contract's endpoints, on the web port
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["ports"][0]["containerPort"] == int(env["STREAMAPP_WEB_PORT"]) == Settings().web_port
    pdb = found["PodDisruptionBudget/streamapp"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # both autoscalers scale this StatefulSet on the gauge the workers serve, up to the partitions
    partitions = int(found["ConfigMap/streamapp"]["data"]["STREAMAPP_PARTITIONS"])
    keda = found["ScaledObject/streamapp"]["spec"]
    hpa = found["HorizontalPodAutoscaler/streamapp"]["spec"]
    gauge = RECOMMENDED_WORKERS._name
    for target in (keda["scaleTargetRef"], hpa["scaleTargetRef"]):
        assert (target["kind"], target["name"]) == ("StatefulSet", sts["metadata"]["name"])
    assert gauge in keda["triggers"][0]["metadata"]["query"]
    assert keda["triggers"][0]["metadata"]["threshold"] == "1"
    assert hpa["metrics"][0]["external"]["metric"]["name"] == gauge
    assert keda["maxReplicaCount"] == hpa["maxReplicas"] == partitions
    # kustomization names files that exist
    kustomization = _documents("kustomization.yaml")[0]
    assert all((K8S / name).is_file() for name in kustomization["resources"])
