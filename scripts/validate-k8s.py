"""Validates Kubernetes objects built by `kubectl kustomize` (YAML on the files named).

Owns: the schema check of every built object and the few rules of this project that a
schema cannot express. Must hold: every object is either validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors),
handed to scripts/validate-crs.mjs through --custom-out (custom resources with a
vendored CRD schema), or printed as "unvalidated: <kind>"; any failure exits non-zero.
"""

import argparse
import json
import os
import sys

import kubernetes_validate
import yaml

# Custom resources whose CRD schemas come from an npm package (validate-crs.mjs).
VENDORED_CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Paths the public edge must never route (operators' and Prometheus' only).
PRIVATE_PATHS = ("/metrics", "/health/ready")


def project_rules(obj, name):
    """Rules of this deployment beyond the schemas; returns a list of problems."""
    problems = []
    kind = obj.get("kind")
    if kind == "Ingress":
        for rule in obj["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                p, t = path["path"], path["pathType"]
                for private in PRIVATE_PATHS:
                    routed = private == p if t == "Exact" else (
                        p == "/" or private == p or private.startswith(p.rstrip("/") + "/"))
                    if routed:
                        problems.append(f"{name}: the public edge routes {private} (path {p} {t})")
    if kind in ("Deployment", "StatefulSet"):
        for c in obj["spec"]["template"]["spec"].get("containers", []):
            if "readinessProbe" not in c or "livenessProbe" not in c:
                problems.append(f"{name}: container {c['name']} lacks a readiness or liveness probe")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("--custom-out", required=True, help="JSON file for validate-crs.mjs")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    failures, custom, counts = [], [], {"validated": 0, "custom": 0, "unvalidated": 0}
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            failures.append(f"{path}: no objects")
        for obj in docs:
            name = f"{os.path.basename(path)}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            failures.extend(project_rules(obj, name))
            key = (obj.get("apiVersion"), obj.get("kind"))
            if key in VENDORED_CRDS:
                custom.append({"source": name, "object": obj})
                counts["custom"] += 1
                continue
            try:
                kubernetes_validate.validate(obj, args.kubernetes_version, strict=True)
                counts["validated"] += 1
            except kubernetes_validate.SchemaNotFoundError:
                print(f"unvalidated: {obj.get('kind')} ({obj.get('apiVersion')}) in {name}: "
                      "no CRD schema available from a package registry")
                counts["unvalidated"] += 1
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path)
                failures.append(f"{name}: {e.message} (at {where or 'top level'})")
            except kubernetes_validate.InvalidSchemaError as e:
                failures.append(f"{name}: {e}")
    with open(args.custom_out, "w") as f:
        json.dump(custom, f)
    for problem in failures:
        print(f"INVALID {problem}", file=sys.stderr)
    print(f"kubernetes {args.kubernetes_version}: {counts['validated']} objects valid (strict), "
          f"{counts['custom']} custom resources passed on to their CRD schemas, "
          f"{counts['unvalidated']} unvalidated, {len(failures)} problems")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
