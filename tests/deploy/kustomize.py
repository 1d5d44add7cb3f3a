"""The part of kustomize that deploy/kubernetes uses, so that the tests can build it where no kustomize is installed.

Supported, and nothing else (any other field of a kustomization is refused, so the manifests cannot drift into a
feature these tests would silently ignore):

- ``resources``: files (one or more YAML documents) and directories holding a ``kustomization.yaml``, in order;
- ``namespace``: set on every object but Namespaces (kustomize leaves cluster-scoped kinds alone; the only one used
  here is the Namespace itself);
- ``images``: ``name`` matched against the image without its tag, ``newName`` and ``newTag`` applied;
- ``patches`` with ``path`` only: strategic merge patches naming their target by kind and name; maps merge, lists
  of maps that all have a ``name`` merge by name (containers, ports, volumes, env), other lists are replaced.

Where ``kubectl`` is installed, tests/deploy/test_kubernetes.py checks that this builds exactly what
``kubectl kustomize`` builds.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace"}


class KustomizeError(Exception):
    """The kustomization uses something this builder does not implement, or names something that is not there."""


def load_documents(path: Path) -> list[Manifest]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document is not None]


def build(directory: Path) -> list[Manifest]:
    """The objects ``kustomize build directory`` outputs (order aside)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}/kustomization.yaml uses {sorted(unknown)}, which this builder lacks")
    objects: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects.extend(build(path) if path.is_dir() else load_documents(path))
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise KustomizeError(f"patch {entry}: only `path` (strategic merge by kind and name) is supported")
        for patch in load_documents(directory / entry["path"]):
            apply_patch(objects, patch)
    for image in kustomization.get("images", []):
        set_image(objects, image)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    return objects


def key(obj: Manifest) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def apply_patch(objects: list[Manifest], patch: Manifest) -> None:
    targets = [obj for obj in objects if key(obj) == key(patch)]
    if len(targets) != 1:
        raise KustomizeError(f"patch of {key(patch)}: {len(targets)} objects match, not one")
    merged = merge(targets[0], patch)
    targets[0].clear()
    targets[0].update(merged)


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch of ``patch`` onto ``base``, as far as these manifests need one."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(str(name).startswith("$") for name in patch):
            raise KustomizeError(f"patch directives ({sorted(patch)}) are not supported")
        result = copy.deepcopy(base)
        for name, value in patch.items():
            result[name] = merge(base[name], value) if name in base else copy.deepcopy(value)
        return result
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        items = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = next((n for n, old in enumerate(items) if old["name"] == item["name"]), None)
            if at is None:
                items.append(copy.deepcopy(item))
            else:
                items[at] = merge(items[at], item)
        return items
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def set_image(objects: list[Manifest], image: dict[str, str]) -> None:
    for obj in objects:
        for container in containers(obj):
            reference = container["image"]
            name, _, tag = reference.partition(":")
            if name != image["name"]:
                continue
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}".rstrip(":")


def containers(obj: Manifest) -> list[dict[str, Any]]:
    """The containers of a Deployment's or a Job's pods (the only workloads here)."""
    if obj["kind"] not in ("Deployment", "Job"):
        return []
    spec = obj["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]
