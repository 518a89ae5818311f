#!/usr/bin/env bash
# Validates manifests with third-party validators (not our own code):
#  - kubernetes-validate: every built-in object in deploy/ and config/
#    against the Kubernetes OpenAPI schema;
#  - check-jsonschema: every l2lb object in config/ against the
#    openAPIV3Schema of its CRD in crds/.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.37.0
venv=${L2LB_VENV:-target/validate-venv}
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0'
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Split config/ and deploy/ into one file per object, sorted by kind, and
# pull each CRD's schema out as a JSON Schema file.
"$venv/bin/python" - "$work" <<'PY'
import json, pathlib, sys
from ruamel.yaml import YAML
out = pathlib.Path(sys.argv[1])
yaml = YAML(typ="safe")
(out / "builtin").mkdir(); (out / "custom").mkdir(); (out / "schemas").mkdir()
for crd in yaml.load_all(pathlib.Path("crds/l2lb.io.yaml").read_text()):
    if not crd:
        continue
    kind = crd["spec"]["names"]["kind"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (out / "schemas" / f"{kind}.json").write_text(json.dumps(schema))
n = 0
for path in sorted(pathlib.Path("config").glob("*.yaml")) + [pathlib.Path(p) for p in
        ["deploy/namespace.yaml", "deploy/rbac.yaml", "deploy/controller.yaml",
         "deploy/speaker.yaml", "deploy/metrics.yaml"]]:
    for i, doc in enumerate(yaml.load_all(path.read_text())):
        if not doc:
            continue
        n += 1
        custom = doc["apiVersion"].startswith("l2lb.io/")
        name = f"{path.stem}-{i}-{doc['kind']}.json"
        (out / ("custom" if custom else "builtin") / name).write_text(json.dumps(doc))
print(f"split {n} objects")
PY

echo "== kubernetes-validate (Kubernetes $K8S_VERSION, strict)"
"$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$work"/builtin/*.json
echo "   $(ls "$work"/builtin | wc -l) built-in objects valid"

echo "== check-jsonschema (CRD schemas)"
for f in "$work"/custom/*.json; do
  kind=$(basename "$f" .json); kind=${kind##*-}
  "$venv/bin/check-jsonschema" --schemafile "$work/schemas/$kind.json" "$f"
done
echo "   $(ls "$work"/custom | wc -l) l2lb objects valid"
