#!/usr/bin/env python3
# Needs Python 3.11+ and these pip packages (PyYAML also comes with kubernetes-validate):
# pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 PyYAML
"""Checks the Helm chart in helm/hangar (found from this file's path), offline.

    pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 PyYAML
    python3 integration-tests/helm/check_chart.py          # HANGAR_BIN=path/to/hangar: more checks

- Helm: helm-python-sdk calls Helm's own Go engine (Helm v4, compiled into the shared
  library its wheel ships), so the chart is linted (`helm lint --strict`) and rendered
  (`helm template`) by the real Helm, with no helm binary and no network.
- Every rendered manifest, and the CRD under crds/, is validated by kubernetes-validate in
  strict mode (unknown fields fail) against the Kubernetes versions in KUBE_VERSIONS. Kinds
  it has no schema for (the Prometheus Operator's ServiceMonitor) are said so and checked
  here field by field.
- The HangarNode CRD's schema is checked against the samples in samples/ with
  check-jsonschema: every valid one must pass, every invalid one must fail on the field its
  `# expect:` line names. With HANGAR_BIN set, the CRD must equal `$HANGAR_BIN
  kubernetes-crd`, and each rendered config file must be accepted by that binary.
- Assertions on the output of several value combinations: probes, the Role's rules, the
  data nodes' two volume claims, (no) ClusterRole, security contexts, the Secret, the
  config files, HPA, Ingress, ServiceMonitor, an existing Secret.
- With HANGAR_BIN, a simulated install: the default render run as its pods would run it, on
  loopback, against integration-tests/fakes/kube_api.py (a stand-in of the API server) with
  the chart's CRD; it must serve with no command run.
- Every value in values.yaml carries a comment there and a row in docs/kubernetes.md.

Prints one line per check and a closing `N passed, N failed` line; exits 1 if any failed.
"""

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

try:
    import check_jsonschema  # noqa: F401  (run as `python -m check_jsonschema`)
    import helm_python as helm
    import kubernetes_validate
    import kubernetes_validate.utils as kv
    import yaml
except ImportError as e:
    sys.exit(f"{e.name} is missing: pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 "
             "check-jsonschema==0.39.0 PyYAML")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CHART = os.path.join(ROOT, "helm", "hangar")
SAMPLES = os.path.join(HERE, "samples")
DOCS = os.path.join(ROOT, "docs", "kubernetes.md")

# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest
# kubernetes-validate 1.37.0 has schemas for.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]
RELEASE, NAMESPACE = "hangar", "storage"
UID = 10001

# What discovery needs (docs/kubernetes.md, "Rights"), and nothing more.
DISCOVERY_RULES = [
    {"apiGroups": ["hangar.dev"], "resources": ["hangarnodes"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": ["hangar.dev"], "resources": ["hangarnodes/status"], "verbs": ["get", "update", "patch"]},
]
# With kubernetes_skip_crd off: get/patch the one definition, create it the first time.
CRD_RULES = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "resourceNames": ["hangarnodes.hangar.dev"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["create"]},
]

# Value combinations rendered, linted and checked.
COMBOS = {
    "defaults": {},
    "autoscaling+ingress+servicemonitor": {
        "frontend": {
            "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                            "targetMemoryUtilizationPercentage": 75},
            "ingress": {
                "enabled": True, "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
                "hosts": [{"host": "s3.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]},
                          {"host": "*.s3.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "s3-tls", "hosts": ["s3.example.com", "*.s3.example.com"]}],
            },
        },
        "s3": {"rootDomain": ".s3.example.com"},
        "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "10s",
                           "labels": {"release": "prometheus"}},
    },
    "existing-secret": {
        "secret": {"existingSecret": "my-hangar-secrets", "rpcSecretKey": "rpc", "adminTokenKey": "admin"},
    },
    "skip-crd-off": {"kubernetes": {"skipCrd": False}},
    "storage+zones+naming": {
        "fullnameOverride": "objects",
        "image": {"repository": "registry.example.com/hangar", "tag": "0.1.0-custom"},
        "replicationFactor": 2,
        "kubernetes": {"serviceName": "objects-eu"},
        "layout": {"defaultZone": "eu-1", "defaultCapacity": "1T"},
        "dataNode": {
            "replicas": 5, "zone": "eu-1a",
            "persistence": {"metadata": {"size": "20Gi", "storageClass": "fast-ssd"},
                            "data": {"size": "2Ti", "storageClass": "bulk-hdd"}},
            "extraEnv": [{"name": "HANGAR_SYNC_TRANQUILITY", "value": "4"}],
            "pdb": {"enabled": False},
        },
        "controlPlane": {"persistence": {"size": "2Gi", "storageClass": "fast-ssd"}},
        "frontend": {"service": {"type": "LoadBalancer", "nodePort": 31900, "port": 80}},
        "logLevel": "debug",
        "telemetry": {"traceSink": "http://otel-collector.monitoring:4317", "traceSampleRatio": 0.25,
                      "logFormat": "json"},
        "clusterDomain": "k8s.example.internal",
    },
    "external-serviceaccount": {
        "serviceAccount": {"create": False, "name": "hangar-sa"},
        "rbac": {"create": False},
        "layout": {"autoAssign": False},
    },
}

results = {"passed": 0, "failed": 0}


def check(cond, what, detail=""):
    if cond:
        results["passed"] += 1
        print(f"ok - {what}", flush=True)
    else:
        results["failed"] += 1
        print(f"not ok - {what}" + (f": {detail}" if detail else ""), flush=True)
    return cond


def note(text):
    print(f"# {text}", flush=True)


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --- Rendering ------------------------------------------------------------------------------

def render(values):
    """The manifests `helm template` gives for these values: [(template path, object)]."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(files.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for obj in yaml.safe_load_all(text):
            if obj:
                docs.append((path, obj))
    return docs, files


def by_kind(docs, kind):
    return [o for _, o in docs if o.get("kind") == kind]


def one(docs, kind, name_suffix):
    found = [o for o in by_kind(docs, kind) if o["metadata"]["name"].endswith(name_suffix)]
    return found[0] if len(found) == 1 else None


def pod_specs(docs):
    """(workload, pod spec) of every StatefulSet, Deployment, DaemonSet and Job."""
    out = []
    for _, o in docs:
        if o.get("kind") in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            out.append((f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]))
    return out


# --- Validation against Kubernetes schemas --------------------------------------------------

def validate_k8s(obj, label):
    """Strict validation against every version of KUBE_VERSIONS; None if there is no schema."""
    for version in KUBE_VERSIONS:
        try:
            kv.validate(obj, version, strict=True)
        except kv.SchemaNotFoundError:
            return None
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            return check(False, f"{label}: valid for Kubernetes {version} (strict)", f"{path}: {e.message}")
    return check(True, f"{label}: valid for Kubernetes {', '.join(KUBE_VERSIONS)} (strict schemas)")


def check_validator_is_strict():
    """The validator must refuse what a real API server would: an unknown field, a wrong type."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": 3900, "targetPoort": "s3"}]}}
    wrong_type = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"replicas": "two", "selector": {}, "template": {}}}
    for obj, what in ((bad, "an unknown field"), (wrong_type, "a string for replicas")):
        try:
            kv.validate(obj, KUBE_VERSIONS[-1], strict=True)
            check(False, f"kubernetes-validate refuses {what} (control)")
        except kv.ValidationError:
            check(True, f"kubernetes-validate refuses {what} (control)")


def check_service_monitor(sm, docs, label):
    """The Prometheus Operator's ServiceMonitor is not in kubernetes-validate's schemas:
    its required fields and its reach are checked here."""
    note(f"{label}: ServiceMonitor (monitoring.coreos.com/v1) is not in kubernetes-validate's schemas; "
         "checking its fields instead")
    spec = sm.get("spec", {})
    check(sm.get("apiVersion") == "monitoring.coreos.com/v1" and sm["metadata"].get("name"),
          f"{label}: ServiceMonitor has apiVersion monitoring.coreos.com/v1 and a name")
    sel = spec.get("selector", {}).get("matchLabels", {})
    check(isinstance(sel, dict) and sel, f"{label}: ServiceMonitor has spec.selector.matchLabels")
    eps = spec.get("endpoints", [])
    check(isinstance(eps, list) and eps and all(e.get("port") == "admin" and e.get("path") == "/metrics"
                                                for e in eps),
          f"{label}: ServiceMonitor endpoints scrape port `admin` at /metrics", json.dumps(eps))
    check(all(re.fullmatch(r"\d+[smh]", str(e.get("interval", "30s"))) for e in eps),
          f"{label}: ServiceMonitor intervals are durations")
    check(spec.get("namespaceSelector", {}).get("matchNames") == [NAMESPACE],
          f"{label}: ServiceMonitor looks in the release's namespace")
    selected = [s for s in by_kind(docs, "Service")
                if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
    components = sorted(s["spec"]["selector"].get("app.kubernetes.io/component", "") for s in selected)
    check(components == ["control-plane", "data-node", "s3-frontend"],
          f"{label}: ServiceMonitor selects one Service per role", str(components))
    check(all(any(p.get("name") == "admin" and p.get("port") == 3903 for p in s["spec"]["ports"])
              for s in selected),
          f"{label}: every selected Service has the admin port 3903")
    check(not any(s["spec"].get("type", "ClusterIP") != "ClusterIP" or s["spec"].get("clusterIP") != "None"
                  for s in selected),
          f"{label}: metrics are scraped through headless Services, not the S3 Service")


# --- The chart's output, role by role ----------------------------------------------------------

def container(spec):
    return spec["containers"][0]


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def check_rendered(label, values, docs, files):
    merged = deep_merge(yaml.safe_load(open(os.path.join(CHART, "values.yaml"))), values)
    full = merged.get("fullnameOverride") or RELEASE
    kinds = sorted({o["kind"] for _, o in docs})
    note(f"{label}: {len(docs)} manifests: {', '.join(kinds)}")

    # Every manifest against the Kubernetes schemas.
    for _, o in docs:
        name = f"{label}: {o['kind']}/{o['metadata']['name']}"
        if validate_k8s(o, name) is None:
            if o["kind"] == "ServiceMonitor":
                check_service_monitor(o, docs, label)
            else:
                check(False, f"{name}: a kind with a schema", "not in kubernetes-validate's schemas")

    # Names and namespaces: nothing cluster-wide but what skipCrd=false asks for.
    check(all(o["metadata"]["name"].startswith(full) for _, o in docs),
          f"{label}: every resource's name starts with `{full}`")
    check(not any("namespace" in o["metadata"] for _, o in docs),
          f"{label}: no manifest pins a namespace (Helm puts the release's)")

    # Probes, images, security contexts on every container.
    specs = pod_specs(docs)
    check(len(specs) == 3, f"{label}: three workloads (control plane, data nodes, frontends)",
          str([w for w, _ in specs]))
    for workload, spec in specs:
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{label}: {workload} container {c['name']}"
            rp, lp, sp = c.get("readinessProbe", {}), c.get("livenessProbe", {}), c.get("startupProbe", {})
            check(rp.get("httpGet", {}).get("path") == "/ready" and rp["httpGet"].get("port") == "admin",
                  f"{where}: readiness probe GET /ready on the admin port", json.dumps(rp))
            check(lp.get("httpGet", {}).get("path") == "/live" and lp["httpGet"].get("port") == "admin",
                  f"{where}: liveness probe GET /live on the admin port", json.dumps(lp))
            check(sp.get("httpGet", {}).get("path") == "/live",
                  f"{where}: startup probe GET /live", json.dumps(sp))
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            check(ports.get("admin") == 3903, f"{where}: admin port 3903 named `admin`", str(ports))
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and sc.get("runAsNonRoot") is True and sc.get("runAsUser") == UID
                  and sc.get("capabilities", {}).get("drop") == ["ALL"],
                  f"{where}: non-root ({UID}), read-only root, no escalation, no capabilities",
                  json.dumps(sc))
            res = c.get("resources", {}).get("requests", {})
            check("cpu" in res and "memory" in res, f"{where}: cpu and memory requests", json.dumps(res))
            image = f"{merged['image']['repository']}:{merged['image']['tag'] or chart_app_version()}"
            check(c["image"] == image and c["imagePullPolicy"] == merged["image"]["pullPolicy"],
                  f"{where}: image {image}, pull policy {merged['image']['pullPolicy']}")
            check(c.get("args", [])[1:] == ["--config", "/etc/hangar/hangar.toml"],
                  f"{where}: runs with --config /etc/hangar/hangar.toml", str(c.get("args")))
        psc = spec.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == UID and psc.get("fsGroup") == UID,
              f"{label}: {workload} pod runs as non-root {UID} with fsGroup {UID}", json.dumps(psc))
        sa = merged["serviceAccount"]["name"] or full
        check(spec.get("serviceAccountName") == sa and spec.get("automountServiceAccountToken") is True,
              f"{label}: {workload} runs as service account {sa} with its token mounted")
        check(spec.get("enableServiceLinks") is False,
              f"{label}: {workload} has no service links (no HANGAR_* variables from Service names)")

    check_roles(label, merged, docs, full)
    check_workloads(label, merged, docs, full)
    check_configs(label, merged, docs, full)
    check_secret(label, merged, docs, full)
    check_frontend_extras(label, merged, docs, full)
    check_pdbs(label, merged, docs)
    notes = files.get("hangar/templates/NOTES.txt", "")
    check(f"exec {full}-control-0 -- /hangar key create" in notes,
          f"{label}: NOTES.txt says how to create a key in the control plane's pod")


def check_roles(label, merged, docs, full):
    sa_name = merged["serviceAccount"]["name"] or full
    roles, bindings = by_kind(docs, "Role"), by_kind(docs, "RoleBinding")
    croles, cbindings = by_kind(docs, "ClusterRole"), by_kind(docs, "ClusterRoleBinding")
    check(len(by_kind(docs, "ServiceAccount")) == (1 if merged["serviceAccount"]["create"] else 0),
          f"{label}: a ServiceAccount exactly when serviceAccount.create")
    if not merged["rbac"]["create"]:
        check(not roles and not bindings and not croles and not cbindings,
              f"{label}: rbac.create=false renders no Role, RoleBinding or ClusterRole")
        return
    check(len(roles) == 1 and roles[0]["rules"] == DISCOVERY_RULES,
          f"{label}: one namespaced Role whose rules are exactly what discovery needs",
          json.dumps([r.get("rules") for r in roles]))
    check(roles and roles[0]["rules"] == docs_role_rules(),
          f"{label}: the Role's rules equal the Role in docs/kubernetes.md")
    b = bindings[0] if len(bindings) == 1 else {}
    check(b.get("roleRef") == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": roles[0]["metadata"]["name"] if roles else None}
          and b.get("subjects") == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}],
          f"{label}: one RoleBinding binds that Role to service account {sa_name}", json.dumps(b))
    if merged["kubernetes"]["skipCrd"]:
        check(not croles and not cbindings, f"{label}: no ClusterRole or ClusterRoleBinding (skipCrd=true)",
              str([c["metadata"]["name"] for c in croles + cbindings]))
    else:
        check(len(croles) == 1 and croles[0]["rules"] == CRD_RULES,
              f"{label}: skipCrd=false adds one ClusterRole: get/patch hangarnodes.hangar.dev, create CRDs",
              json.dumps([c.get("rules") for c in croles]))
        cb = cbindings[0] if len(cbindings) == 1 else {}
        check(croles and cb.get("roleRef", {}).get("name") == croles[0]["metadata"]["name"]
              and cb.get("roleRef", {}).get("kind") == "ClusterRole"
              and cb.get("subjects") == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}],
              f"{label}: one ClusterRoleBinding binds it to service account {sa_name}")
        check(NAMESPACE in (croles[0]["metadata"]["name"] if croles else ""),
              f"{label}: the ClusterRole's name carries the namespace (two releases of one name do not clash)")


def check_workloads(label, merged, docs, full):
    cp = one(docs, "StatefulSet", "-control")
    dn = one(docs, "StatefulSet", "-data")
    fe = one(docs, "Deployment", "-frontend")
    if not check(cp and dn and fe, f"{label}: control plane and data StatefulSets, frontend Deployment"):
        return

    # Control plane: one replica, one volume for metadata_dir.
    check(cp["spec"]["replicas"] == 1, f"{label}: control plane StatefulSet has 1 replica")
    vcts = cp["spec"]["volumeClaimTemplates"]
    p = merged["controlPlane"]["persistence"]
    check([v["metadata"]["name"] for v in vcts] == ["meta"]
          and vcts[0]["spec"]["resources"]["requests"]["storage"] == p["size"]
          and vcts[0]["spec"].get("storageClassName", "") == p["storageClass"],
          f"{label}: control plane has one volume claim `meta` ({p['size']}, class "
          f"{p['storageClass'] or 'default'})", json.dumps(vcts))
    mounts = {m["name"]: m for m in container(cp["spec"]["template"]["spec"])["volumeMounts"]}
    check(mounts.get("meta", {}).get("mountPath") == "/var/lib/hangar/meta",
          f"{label}: control plane mounts `meta` at /var/lib/hangar/meta")
    check(cp["spec"]["serviceName"] == f"{full}-control" and one(docs, "Service", "-control"),
          f"{label}: control plane StatefulSet has its headless Service")

    # Data nodes: two claims, metadata and data, sizes and classes from values.
    check(dn["spec"]["replicas"] == merged["dataNode"]["replicas"],
          f"{label}: data StatefulSet has {merged['dataNode']['replicas']} replicas")
    vcts = {v["metadata"]["name"]: v["spec"] for v in dn["spec"]["volumeClaimTemplates"]}
    check(sorted(vcts) == ["data", "meta"], f"{label}: data StatefulSet has exactly two volume claims, "
          "meta and data", str(sorted(vcts)))
    for claim, key in (("meta", "metadata"), ("data", "data")):
        want = merged["dataNode"]["persistence"][key]
        got = vcts.get(claim, {})
        check(got.get("resources", {}).get("requests", {}).get("storage") == want["size"]
              and got.get("storageClassName", "") == want["storageClass"]
              and got.get("accessModes") == want["accessModes"],
              f"{label}: data claim `{claim}` is {want['size']}, class {want['storageClass'] or 'default'}",
              json.dumps(got))
    mounts = {m["name"]: m["mountPath"] for m in container(dn["spec"]["template"]["spec"])["volumeMounts"]}
    check(mounts.get("meta") == "/var/lib/hangar/meta" and mounts.get("data") == "/var/lib/hangar/data",
          f"{label}: data nodes mount meta and data where their config points", str(mounts))
    check(dn["spec"]["serviceName"] == f"{full}-data" and one(docs, "Service", "-data"),
          f"{label}: data StatefulSet has its headless Service")

    # Frontends: stateless.
    fspec = fe["spec"]["template"]["spec"]
    check(not any("persistentVolumeClaim" in v or "hostPath" in v for v in fspec.get("volumes", [])),
          f"{label}: frontends have no persistent volume")
    if merged["frontend"]["autoscaling"]["enabled"]:
        check("replicas" not in fe["spec"], f"{label}: frontend Deployment leaves replicas to the HPA")
    else:
        check(fe["spec"].get("replicas") == merged["frontend"]["replicas"],
              f"{label}: frontend Deployment has {merged['frontend']['replicas']} replicas")

    # Discovery environment (docs/kubernetes.md): pod name and uid, announced address. The
    # StatefulSets announce their pods' stable DNS names through their headless Services
    # (a pod's IP changes when it is rescheduled), the frontends their pod IP.
    domain = merged["clusterDomain"]
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    for workload in (cp, dn):
        svc = services.get(workload["spec"]["serviceName"], {})
        check(svc.get("spec", {}).get("clusterIP") == "None"
              and svc["spec"].get("publishNotReadyAddresses") is True
              and all(svc["spec"]["selector"].get(k) == v
                      for k, v in workload["spec"]["selector"]["matchLabels"].items()),
              f"{label}: {workload['metadata']['name']}'s serviceName is a headless Service selecting its "
              "pods and publishing them before they are ready (their DNS names resolve at start)",
              json.dumps(svc.get("spec")))
    for workload, port, headless in ((cp, 3901, f"{full}-control"), (dn, 3901, f"{full}-data"),
                                     (fe, 3900, None)):
        c = container(workload["spec"]["template"]["spec"])
        env = env_of(c)

        def field(name):
            return env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if headless:
            want = f"$(POD_NAME).{headless}.$(POD_NAMESPACE).svc.{domain}:{port}"
            uses = ["POD_NAME", "POD_NAMESPACE"]
        else:
            want = f"$(POD_IP):{port}"
            uses = ["POD_IP"]
        ok = (field("POD_NAME") == "metadata.name" and field("POD_UID") == "metadata.uid"
              and field("POD_IP") == "status.podIP"
              and (field("POD_NAMESPACE") == "metadata.namespace" if headless else "POD_NAMESPACE" not in env)
              and env.get("HANGAR_RPC_PUBLIC_ADDR", {}).get("value") == want
              and env.get("HANGAR_LOG", {}).get("value") == merged["logLevel"])
        # Kubernetes expands $(VAR) only from variables defined earlier in the list.
        names = [e["name"] for e in c["env"]]
        ok = ok and all(u in names and names.index(u) < names.index("HANGAR_RPC_PUBLIC_ADDR") for u in uses)
        check(ok, f"{label}: {workload['metadata']['name']} has POD_NAME, POD_UID and "
              f"HANGAR_RPC_PUBLIC_ADDR={want} from the downward API",
              json.dumps(c["env"][:6]))
    zone = env_of(container(dn["spec"]["template"]["spec"])).get("HANGAR_ZONE", {})
    if merged["dataNode"]["zone"]:
        check(zone.get("value") == merged["dataNode"]["zone"], f"{label}: data nodes announce zone "
              f"{merged['dataNode']['zone']}")
    else:
        check(zone.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
              == f"metadata.labels['{merged['dataNode']['zoneLabel']}']",
              f"{label}: data nodes read HANGAR_ZONE from the pod label {merged['dataNode']['zoneLabel']}")
    for role, workload in (("controlPlane", cp), ("dataNode", dn), ("frontend", fe)):
        env = env_of(container(workload["spec"]["template"]["spec"]))
        check(all(env.get(e["name"]) == e for e in merged[role]["extraEnv"]),
              f"{label}: {role}.extraEnv reaches its container")


def check_configs(label, merged, docs, full):
    cms = by_kind(docs, "ConfigMap")
    if not check(len(cms) == 1, f"{label}: one ConfigMap holds the config files"):
        return
    cm = cms[0]
    configs = {}
    for key, text in cm["data"].items():
        try:
            configs[key] = tomllib.loads(text)
            check(True, f"{label}: {key} is valid TOML")
        except tomllib.TOMLDecodeError as e:
            check(False, f"{label}: {key} is valid TOML", str(e))
    check(sorted(configs) == ["control-plane.toml", "data-node.toml", "s3-frontend.toml"],
          f"{label}: one config file per role", str(sorted(configs)))
    secret_dir = "/run/secrets/hangar"
    service = merged["kubernetes"]["serviceName"] or full
    for key, cfg in configs.items():
        check("s3_web" not in cfg and "k2v_api" not in cfg, f"{label}: {key} has no [s3_web] or [k2v_api]")
        tel = merged["telemetry"]
        admin = cfg.get("admin", {})
        check(admin.get("trace_sink") == (tel["traceSink"] or None)
              and admin.get("trace_sample_ratio") == float(tel["traceSampleRatio"])
              and admin.get("log_format") == tel["logFormat"],
              f"{label}: {key} exports traces as the telemetry values say", str(admin))
        check(cfg.get("kubernetes_namespace") == NAMESPACE and cfg.get("kubernetes_service_name") == service
              and cfg.get("kubernetes_skip_crd") == merged["kubernetes"]["skipCrd"]
              and not cfg.get("bootstrap_peers"),
              f"{label}: {key} turns on Kubernetes discovery ({NAMESPACE}/{service}, skip_crd "
              f"{merged['kubernetes']['skipCrd']}) without bootstrap_peers")
        check(cfg.get("admin", {}).get("api_bind_addr") == "0.0.0.0:3903",
              f"{label}: {key} binds the admin endpoint on 0.0.0.0:3903")
        check(cfg.get("rpc_secret_file") == f"{secret_dir}/{merged['secret']['rpcSecretKey']}"
              and "rpc_secret" not in cfg,
              f"{label}: {key} reads the rpc secret from the mounted Secret")
    cpc = configs.get("control-plane.toml", {})
    check(cpc.get("rpc_bind_addr") == "0.0.0.0:3901" and cpc.get("metadata_dir") == "/var/lib/hangar/meta",
          f"{label}: control plane binds gRPC on 0.0.0.0:3901, keeps its state on its volume")
    check(cpc.get("replication_factor") == merged["replicationFactor"],
          f"{label}: control plane's replication_factor is {merged['replicationFactor']}")
    layout = cpc.get("layout", {})
    want = {"auto_assign": merged["layout"]["autoAssign"]}
    if merged["layout"]["defaultZone"]:
        want["default_zone"] = merged["layout"]["defaultZone"]
    if merged["layout"]["defaultCapacity"]:
        want["default_capacity"] = merged["layout"]["defaultCapacity"]
    check(layout == want, f"{label}: control plane's [layout] is {want}", str(layout))
    check(cpc.get("admin", {}).get("admin_token_file") == f"{secret_dir}/{merged['secret']['adminTokenKey']}",
          f"{label}: control plane reads the admin token from the mounted Secret")
    dnc = configs.get("data-node.toml", {})
    check(dnc.get("rpc_bind_addr") == "0.0.0.0:3901" and dnc.get("metadata_dir") == "/var/lib/hangar/meta"
          and dnc.get("data_dir") == "/var/lib/hangar/data",
          f"{label}: data nodes bind gRPC on 0.0.0.0:3901, keep metadata and data on their volumes")
    check("admin_token_file" not in dnc.get("admin", {}), f"{label}: data nodes get no admin token")
    fec = configs.get("s3-frontend.toml", {})
    want_s3 = {"api_bind_addr": "0.0.0.0:3900", "s3_region": merged["s3"]["region"]}
    if merged["s3"]["rootDomain"]:
        want_s3["root_domain"] = merged["s3"]["rootDomain"]
    check(fec.get("s3_api") == want_s3, f"{label}: frontends' [s3_api] is {want_s3}", str(fec.get("s3_api")))
    check("admin_token_file" not in fec.get("admin", {}), f"{label}: frontends get no admin token")

    # Each pod mounts its own file with subPath, and the Secret's files it names.
    for suffix, kind, key, admin in (("-control", "StatefulSet", "control-plane.toml", True),
                                     ("-data", "StatefulSet", "data-node.toml", False),
                                     ("-frontend", "Deployment", "s3-frontend.toml", False)):
        w = one(docs, kind, suffix)
        if not w:
            continue
        spec = w["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["name"]: m for m in container(spec)["volumeMounts"]}
        check(vols.get("config", {}).get("configMap", {}).get("name") == cm["metadata"]["name"]
              and mounts.get("config", {}).get("subPath") == key
              and mounts["config"].get("mountPath") == "/etc/hangar/hangar.toml",
              f"{label}: {w['metadata']['name']} mounts {key} with subPath at /etc/hangar/hangar.toml")
        items = [i["key"] for i in vols.get("secrets", {}).get("secret", {}).get("items", [])]
        want_items = [merged["secret"]["rpcSecretKey"]] + ([merged["secret"]["adminTokenKey"]] if admin else [])
        check(items == want_items and mounts.get("secrets", {}).get("mountPath") == secret_dir,
              f"{label}: {w['metadata']['name']} mounts the Secret's {' and '.join(want_items)} at {secret_dir}",
              str(items))
        ann = w["spec"]["template"]["metadata"].get("annotations", {})
        check(re.fullmatch(r"[0-9a-f]{64}", ann.get("checksum/config", "")),
              f"{label}: {w['metadata']['name']} restarts when its config changes (checksum annotation)")
    if HANGAR_BIN:
        for key, text in cm["data"].items():
            check_config_accepted(label, key, text, merged)


def check_config_accepted(label, key, text, merged):
    """Runs the binary on the rendered file: it must load it (unknown keys, types, secret
    files) and stop only later, at the Kubernetes client, which has no cluster here."""
    service = {"control-plane.toml": "control-plane", "data-node.toml": "data-node",
               "s3-frontend.toml": "s3-frontend"}[key]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, key)
        with open(path, "w") as f:
            f.write(text)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "KUBERNETES_"))}
        # The secret files the Secret would mount, and loopback ports the OS picks: the file's
        # keys are loaded and checked, nothing listens where it should not.
        for name, value in (("RPC_SECRET_FILE", "a" * 64), ("ADMIN_TOKEN_FILE", "b" * 64)):
            p = os.path.join(d, name)
            with open(p, "w") as f:
                f.write(value + "\n")
            if name == "RPC_SECRET_FILE" or "admin_token_file" in text:
                env[f"HANGAR_{name}"] = p
        os.makedirs(os.path.join(d, "meta"))
        os.makedirs(os.path.join(d, "data"))
        env.update({
            "HANGAR_METADATA_DIR": os.path.join(d, "meta"),
            "HANGAR_RPC_BIND_ADDR": "127.0.0.1:0",
            "HANGAR_ADMIN_API_BIND_ADDR": "127.0.0.1:0",
            "HANGAR_RPC_PUBLIC_ADDR": "127.0.0.1:3901",
            "KUBECONFIG": os.path.join(d, "no-kubeconfig"),
            "HOME": d,
        })
        if service == "data-node":
            env["HANGAR_DATA_DIR"] = os.path.join(d, "data")
        if service == "s3-frontend":
            env["HANGAR_S3_API_BIND_ADDR"] = "127.0.0.1:0"
        try:
            p = subprocess.run([HANGAR_BIN, service, "--config", path], env=env, capture_output=True,
                               text=True, timeout=60)
            out = p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            out = f"still running after 60 s: {e.stderr}"
        loaded = path not in out and "kubernetes configuration" in out
        check(loaded, f"{label}: `hangar {service}` accepts the rendered {key} (stops later, at the "
              "Kubernetes client)", out.strip()[-400:])


def check_secret(label, merged, docs, full):
    secrets = by_kind(docs, "Secret")
    existing = merged["secret"]["existingSecret"]
    name = existing or f"{full}-secrets"
    if existing:
        check(not secrets, f"{label}: existingSecret: the chart creates no Secret")
    else:
        s = secrets[0] if len(secrets) == 1 else {}
        check(s.get("metadata", {}).get("name") == name, f"{label}: the chart creates Secret {name}")
        data = s.get("data", {})
        import base64
        for key in (merged["secret"]["rpcSecretKey"], merged["secret"]["adminTokenKey"]):
            value = base64.b64decode(data.get(key, "")).decode()
            check(re.fullmatch(r"[0-9a-f]{64}", value),
                  f"{label}: generated {key} is 64 hex digits", value)
        check(len(set(data.values())) == 2, f"{label}: rpc secret and admin token differ")
    for _, spec in pod_specs(docs):
        vols = {v["name"]: v for v in spec["volumes"]}
        check(vols.get("secrets", {}).get("secret", {}).get("secretName") == name,
              f"{label}: pods mount Secret {name}")
        break


def check_frontend_extras(label, merged, docs, full):
    fe = merged["frontend"]
    svc = one(docs, "Service", "-s3")
    if check(svc is not None, f"{label}: an S3 Service"):
        port = svc["spec"]["ports"][0]
        check(svc["spec"]["type"] == fe["service"]["type"] and port["port"] == fe["service"]["port"]
              and port["targetPort"] == "s3" and port.get("nodePort", "") == fe["service"]["nodePort"],
              f"{label}: S3 Service is {fe['service']['type']} on port {fe['service']['port']} to the frontends' "
              "s3 port", json.dumps(svc["spec"]))
        check(svc["spec"]["selector"].get("app.kubernetes.io/component") == "s3-frontend",
              f"{label}: S3 Service selects the frontends only")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if fe["autoscaling"]["enabled"]:
        h = hpas[0] if len(hpas) == 1 else {}
        a = fe["autoscaling"]
        metrics = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
                   for m in h.get("spec", {}).get("metrics", [])}
        want = {k: v for k, v in (("cpu", a["targetCPUUtilizationPercentage"]),
                                  ("memory", a["targetMemoryUtilizationPercentage"])) if v}
        check(h.get("spec", {}).get("scaleTargetRef") == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                          "name": f"{full}-frontend"}
              and h["spec"]["minReplicas"] == a["minReplicas"] and h["spec"]["maxReplicas"] == a["maxReplicas"]
              and metrics == want,
              f"{label}: HPA scales the frontends {a['minReplicas']}..{a['maxReplicas']} on {want}", json.dumps(h))
    else:
        check(not hpas, f"{label}: no HPA")
    ings = by_kind(docs, "Ingress")
    if fe["ingress"]["enabled"]:
        i = ings[0] if len(ings) == 1 else {}
        rules = i.get("spec", {}).get("rules", [])
        backends = {(p["backend"]["service"]["name"], p["backend"]["service"]["port"].get("name"))
                    for r in rules for p in r["http"]["paths"]}
        check([r["host"] for r in rules] == [h["host"] for h in fe["ingress"]["hosts"]]
              and backends == {(f"{full}-s3", "s3")}
              and i["spec"].get("tls") == (fe["ingress"]["tls"] or None)
              and i["spec"].get("ingressClassName") == (fe["ingress"]["className"] or None)
              and i["metadata"].get("annotations") == (fe["ingress"]["annotations"] or None),
              f"{label}: Ingress routes {[h['host'] for h in fe['ingress']['hosts']]} to the S3 Service",
              json.dumps(i))
    else:
        check(not ings, f"{label}: no Ingress")
    sms = by_kind(docs, "ServiceMonitor")
    if merged["serviceMonitor"]["enabled"]:
        sm = sms[0] if len(sms) == 1 else {}
        sm_spec = sm.get("spec", {})
        check(sm_spec.get("endpoints", [{}])[0].get("interval") == merged["serviceMonitor"]["interval"]
              and all(sm.get("metadata", {}).get("labels", {}).get(k) == v
                      for k, v in merged["serviceMonitor"]["labels"].items()),
              f"{label}: ServiceMonitor carries the interval and labels from values")
    else:
        check(not sms, f"{label}: no ServiceMonitor")


def check_pdbs(label, merged, docs):
    pdbs = {p["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component"): p
            for p in by_kind(docs, "PodDisruptionBudget")}
    for role, component in (("controlPlane", "control-plane"), ("dataNode", "data-node"),
                            ("frontend", "s3-frontend")):
        if merged[role]["pdb"]["enabled"]:
            p = pdbs.get(component, {})
            check(p.get("spec", {}).get("maxUnavailable") == merged[role]["pdb"]["maxUnavailable"],
                  f"{label}: PodDisruptionBudget for {component}, maxUnavailable "
                  f"{merged[role]['pdb']['maxUnavailable']}")
        else:
            check(component not in pdbs, f"{label}: no PodDisruptionBudget for {component}")


# --- Lint -----------------------------------------------------------------------------------------

def lint(label, values):
    try:
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSIONS[-1]}")
    except helm.HelmError as e:
        check(False, f"{label}: helm lint --strict runs", str(e))
        return
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + \
        [{"error": e} for e in report.get("errors") or []]
    infos = [m["error"] for m in report.get("messages", []) if m.get("severity", 0) < 2]
    check(report.get("total_charts_linted") == 1 and not bad,
          f"{label}: helm lint --strict passes" + (f" (info: {'; '.join(infos)})" if infos else ""),
          json.dumps(bad))


# --- The CRD ----------------------------------------------------------------------------------------

def check_crd():
    path = os.path.join(CHART, "crds", "hangarnode.yaml")
    if not check(os.path.isfile(path), "helm/hangar/crds/hangarnode.yaml exists"):
        return None
    with open(path) as f:
        text = f.read()
    crds = [d for d in yaml.safe_load_all(text) if d]
    if not check(len(crds) == 1 and crds[0].get("kind") == "CustomResourceDefinition",
                 "crds/hangarnode.yaml holds one CustomResourceDefinition"):
        return None
    crd = crds[0]
    check(crd["metadata"]["name"] == "hangarnodes.hangar.dev" and crd["spec"]["group"] == "hangar.dev"
          and crd["spec"]["scope"] == "Namespaced" and [v["name"] for v in crd["spec"]["versions"]] == ["v1"],
          "the CRD is hangarnodes.hangar.dev, namespaced, version v1")
    validate_k8s(crd, "crds/hangarnode.yaml: CustomResourceDefinition")
    try:
        with helm.Chart.load(CHART) as chart:
            loaded = chart.crds
    except helm.HelmError as e:
        loaded = []
        note(f"Helm cannot load the chart: {e}")
    check([c["filename"] for c in loaded] == ["hangar/crds/hangarnode.yaml"],
          "Helm loads crds/hangarnode.yaml as the chart's CRD (installed before the templates)",
          str([c.get("filename") for c in loaded]))
    if HANGAR_BIN:
        p = subprocess.run([HANGAR_BIN, "kubernetes-crd"], capture_output=True, text=True)
        check(p.returncode == 0 and p.stdout == text,
              f"crds/hangarnode.yaml is exactly `{HANGAR_BIN} kubernetes-crd`",
              "differs: regenerate it with `hangar kubernetes-crd > helm/hangar/crds/hangarnode.yaml`")
    else:
        note("HANGAR_BIN is not set: the CRD is not compared with `hangar kubernetes-crd`")
    return crd


def check_samples(crd):
    """The CRD's schema (what the API server validates HangarNodes with) against samples,
    with check-jsonschema. HangarNode is not in kubernetes-validate's schemas: it is defined
    by this CRD."""
    note("HangarNode (hangar.dev/v1) is not in kubernetes-validate's schemas: its CRD's "
         "openAPIV3Schema is checked against samples with check-jsonschema")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    with tempfile.TemporaryDirectory() as d:
        schema_path = os.path.join(d, "hangarnode.schema.json")
        with open(schema_path, "w") as f:
            json.dump(schema, f)
        doc_samples = []
        with open(DOCS) as f:
            for block in re.findall(r"```yaml\n(.*?)```", f.read(), re.S):
                if "kind: HangarNode" in block:
                    p = os.path.join(d, f"docs-sample-{len(doc_samples)}.yaml")
                    with open(p, "w") as out:
                        out.write(block)
                    doc_samples.append(p)
        valid = sorted(os.path.join(SAMPLES, "valid", n) for n in os.listdir(os.path.join(SAMPLES, "valid")))
        invalid = sorted(os.path.join(SAMPLES, "invalid", n) for n in os.listdir(os.path.join(SAMPLES, "invalid")))
        check(len(valid) >= 3 and len(invalid) >= 8 and doc_samples,
              f"samples: {len(valid)} valid, {len(invalid)} invalid, {len(doc_samples)} from docs/kubernetes.md")
        for path in valid + doc_samples:
            out, rc = run_check_jsonschema(schema_path, path)
            name = os.path.relpath(path, HERE) if path.startswith(HERE) else "docs/kubernetes.md's HangarNode"
            check(rc == 0, f"CRD schema accepts {name}", out)
        for path in invalid:
            with open(path) as f:
                first = f.readline()
            m = re.match(r"# expect: (\S+)", first)
            if not m:
                check(False, f"{os.path.relpath(path, HERE)} names the field it breaks (`# expect: FIELD`)")
                continue
            field = m.group(1)
            out, rc = run_check_jsonschema(schema_path, path)
            # check-jsonschema names the failing path ($.spec.port) or, for a missing
            # property, its parent and the property's name.
            parent, _, leaf = field.rpartition(".")
            named = (f"$.{field}:" in out
                     or f"{'$.' + parent if parent else '$'}: '{leaf}' is a required property" in out)
            check(rc == 1 and named, f"CRD schema refuses {os.path.relpath(path, HERE)} on {field}", out)


def run_check_jsonschema(schema_path, instance):
    p = subprocess.run([sys.executable, "-m", "check_jsonschema", "--schemafile", schema_path, instance],
                       capture_output=True, text=True)
    return (p.stdout + p.stderr).strip(), p.returncode


# --- A simulated install ------------------------------------------------------------------------

def check_simulated_install():
    """With HANGAR_BIN: the default render run as its pods would run it, on this machine. Every
    process gets its rendered config file, the generated Secret's files and its container's
    rendered environment (downward API values filled in); only what a pod has to itself is
    moved (listen and announced addresses to free loopback ports, volumes to a temporary
    directory). The API server is the in-repository stand-in (integration-tests/fakes/kube_api.py)
    with the chart's CRD installed. With no command run, automatic layout must make the
    cluster serve: every process ready, layout version 1 over 3 data nodes, and the CLI in the
    control plane's environment must create a key (the NOTES.txt and docs path)."""
    import base64
    import socket
    import time
    import urllib.request
    import uuid
    if not HANGAR_BIN:
        note("HANGAR_BIN is not set: no simulated install")
        return
    docs, _ = render({})
    cm = by_kind(docs, "ConfigMap")[0]
    secret = by_kind(docs, "Secret")[0]

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    procs = []
    with tempfile.TemporaryDirectory() as d:
        try:
            api = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "..", "fakes", "kube_api.py"), "--port", "0",
                 "--crd", os.path.join(CHART, "crds", "hangarnode.yaml")],
                stdout=subprocess.PIPE, stderr=open(os.path.join(d, "api.log"), "w"), text=True)
            procs.append(api)
            url = "http://" + api.stdout.readline().split()[-1]
            kubeconfig = os.path.join(d, "kubeconfig")
            with open(kubeconfig, "w") as f:
                f.write(f"apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n"
                        "users:\n- name: fake\n  user: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n"
                        f"    user: fake\n    namespace: {NAMESPACE}\ncurrent-context: fake\n")
            secret_dir = os.path.join(d, "secrets")
            os.makedirs(secret_dir)
            for key, value in secret["data"].items():
                with open(os.path.join(secret_dir, key), "w") as f:
                    f.write(base64.b64decode(value).decode())
            base = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "KUBERNETES_", "POD_"))}
            base["KUBECONFIG"] = kubeconfig
            admin_ports, envs, announced = [], {}, {}
            for kind, suffix, count in (("StatefulSet", "-control", 1), ("StatefulSet", "-data", 3),
                                        ("Deployment", "-frontend", 2)):
                w = one(docs, kind, suffix)
                spec = w["spec"]["template"]["spec"]
                c = container(spec)
                cfg_mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
                for i in range(count):
                    pod = f"{w['metadata']['name']}-{i}"
                    home = os.path.join(d, pod)
                    os.makedirs(home)
                    with open(os.path.join(home, "hangar.toml"), "w") as f:
                        f.write(cm["data"][cfg_mount["subPath"]])
                    field = {"metadata.name": pod, "metadata.uid": str(uuid.uuid4()), "status.podIP": "127.0.0.1",
                             "metadata.namespace": NAMESPACE}
                    env = dict(base)
                    for e in c["env"]:
                        if "value" in e:
                            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), e["value"])
                        else:
                            env[e["name"]] = field.get(e["valueFrom"]["fieldRef"]["fieldPath"], "")
                    announced[pod] = env.get("HANGAR_RPC_PUBLIC_ADDR")
                    # What a pod has to itself: its addresses and volumes; the secret files'
                    # directory and the config file's path. The announced address (a DNS
                    # name or the pod's IP, expanded above) becomes a loopback port.
                    rpc, admin, s3 = free_port(), free_port(), free_port()
                    admin_ports.append(admin)
                    env.update({
                        "HANGAR_RPC_BIND_ADDR": f"127.0.0.1:{rpc}",
                        "HANGAR_ADMIN_API_BIND_ADDR": f"127.0.0.1:{admin}",
                        "HANGAR_S3_API_BIND_ADDR": f"127.0.0.1:{s3}",
                        "HANGAR_RPC_PUBLIC_ADDR": f"127.0.0.1:{s3 if suffix == '-frontend' else rpc}",
                        "HANGAR_METADATA_DIR": os.path.join(home, "meta"),
                        "HANGAR_DATA_DIR": os.path.join(home, "data"),
                        "HANGAR_RPC_SECRET_FILE": os.path.join(secret_dir, merged_key("rpcSecretKey")),
                    })
                    if suffix == "-control":
                        env["HANGAR_ADMIN_TOKEN_FILE"] = os.path.join(secret_dir, merged_key("adminTokenKey"))
                    if "HANGAR_CONFIG" in env:
                        env["HANGAR_CONFIG"] = os.path.join(home, "hangar.toml")
                    envs[pod] = env
                    args = [a if a != cfg_mount["mountPath"] else os.path.join(home, "hangar.toml") for a in c["args"]]
                    procs.append(subprocess.Popen([HANGAR_BIN] + args, env=env, stdin=subprocess.DEVNULL,
                                                  stdout=open(os.path.join(home, "log"), "w"),
                                                  stderr=subprocess.STDOUT))
            want = {f"{RELEASE}-control-0": f"{RELEASE}-control-0.{RELEASE}-control.{NAMESPACE}.svc.cluster.local:3901",
                    f"{RELEASE}-frontend-0": "127.0.0.1:3900"}
            want.update({f"{RELEASE}-data-{i}": f"{RELEASE}-data-{i}.{RELEASE}-data.{NAMESPACE}.svc.cluster.local:3901"
                         for i in range(3)})
            check(all(announced.get(k) == v for k, v in want.items()),
                  "simulated install: the rendered environment expands to the StatefulSet pods' DNS names "
                  "and the frontends' pod IP", json.dumps(announced))
            ready, deadline = [], time.monotonic() + 120
            while time.monotonic() < deadline:
                ready = []
                for port in admin_ports:
                    try:
                        ready.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3).status)
                    except Exception as e:  # noqa: BLE001
                        ready.append(getattr(e, "code", "down"))
                if all(r == 200 for r in ready) or any(p.poll() is not None for p in procs):
                    break
                time.sleep(1)
            exited = [p.args[1] for p in procs[1:] if p.poll() is not None]
            check(not exited and all(r == 200 for r in ready),
                  "simulated install: control plane, 3 data nodes and 2 frontends all answer /ready 200 "
                  "with no command run", f"/ready: {ready}; exited: {exited}")
            cp_env = envs[f"{RELEASE}-control-0"]
            status = subprocess.run([HANGAR_BIN, "status"], env=cp_env, capture_output=True, text=True, timeout=60)
            check(status.returncode == 0 and "Layout version: 1" in status.stdout
                  and status.stdout.count(" data ") >= 3,
                  "simulated install: `hangar status` in the control plane's environment shows layout "
                  "version 1 over the 3 data nodes", (status.stdout + status.stderr)[-600:])
            key = subprocess.run([HANGAR_BIN, "key", "create", "alice"], env=cp_env, capture_output=True,
                                 text=True, timeout=60)
            check(key.returncode == 0 and "Secret key:" in key.stdout,
                  "simulated install: `hangar key create alice` in the control plane's environment prints a key",
                  (key.stdout + key.stderr)[-400:])
            with urllib.request.urlopen(f"{url}/apis/hangar.dev/v1/namespaces/{NAMESPACE}/hangarnodes") as r:
                items = json.loads(r.read())["items"]
            roles = sorted(i["spec"]["role"] for i in items)
            owners = sorted(i["metadata"].get("ownerReferences", [{}])[0].get("name", "") for i in items)
            check(roles == ["control", "data", "data", "data", "frontend", "frontend"]
                  and owners == sorted(envs), "simulated install: six HangarNodes, each owned by its pod",
                  f"{roles} {owners}")
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def merged_key(name):
    with open(os.path.join(CHART, "values.yaml")) as f:
        return yaml.safe_load(f)["secret"][name]


# --- Documentation --------------------------------------------------------------------------------

def docs_role_rules():
    with open(DOCS) as f:
        for block in re.findall(r"```yaml\n(.*?)```", f.read(), re.S):
            obj = yaml.safe_load(block)
            if isinstance(obj, dict) and obj.get("kind") == "Role":
                return obj["rules"]
    return None


def documented_values():
    """Each value of values.yaml as a dotted path, with whether a comment precedes its key.
    A key with a comment documents its whole value; one without must be a map whose keys
    are each documented."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        lines = f.read().splitlines()
    out, stack = [], []  # stack: (indent, key, commented)
    prev_comment = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            prev_comment = False
            continue
        if stripped.startswith("#"):
            prev_comment = True
            continue
        m = re.match(r"^( *)([A-Za-z0-9_]+):(.*)$", line)
        if not m:  # list items and values continued over lines
            prev_comment = False
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if any(c for _, _, c in stack):  # inside a value documented as a whole
            prev_comment = False
            continue
        path = ".".join([k for _, k, _ in stack] + [key])
        commented = prev_comment or "#" in rest
        is_map_start = rest.strip() == ""
        if commented or not is_map_start:
            out.append((path, commented))
        stack.append((indent, key, commented))
        prev_comment = False
    return out


def check_docs():
    values = documented_values()
    check(len(values) > 40, f"values.yaml: {len(values)} values found")
    undocumented = [p for p, c in values if not c]
    check(not undocumented, "every value in values.yaml has a comment", ", ".join(undocumented))
    with open(DOCS) as f:
        doc = f.read()
    m = re.search(r"^## Installing with Helm\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    if not check(m, "docs/kubernetes.md has a section `Installing with Helm`"):
        return
    section = m.group(1)
    rows = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, re.M))
    missing = [p for p, _ in values if p not in rows]
    check(not missing, "every value has a row in docs/kubernetes.md's values table", ", ".join(missing))
    # Defaults written as one literal (`3`, `""`, `[]`, `ClusterIP`) must be values.yaml's.
    with open(os.path.join(CHART, "values.yaml")) as f:
        defaults = yaml.safe_load(f)
    wrong = []
    for path, shown in re.findall(r"^\| `([A-Za-z0-9_.]+)` \| `([^`]*)` \|", section, re.M):
        value = defaults
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        as_text = json.dumps(value) if value in ("", [], {}) or isinstance(value, bool) else str(value)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            as_text = "[" + ", ".join(value) + "]"
        if shown != as_text:
            wrong.append(f"{path}: docs `{shown}`, values.yaml `{as_text}`")
    check(not wrong, "the defaults docs/kubernetes.md shows are values.yaml's", "; ".join(wrong))
    extra = sorted(rows - {p for p, _ in values})
    check(not extra, "docs/kubernetes.md's values table names no value the chart lacks", ", ".join(extra))
    check(docs_role_rules() == DISCOVERY_RULES, "docs/kubernetes.md's Role is what the chart grants")
    for version in KUBE_VERSIONS:
        check(version.rsplit(".", 1)[0] in section,
              f"docs/kubernetes.md names Kubernetes {version.rsplit('.', 1)[0]}, a version checked against")


def chart_app_version():
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        return str(yaml.safe_load(f)["appVersion"])


def check_chart_metadata():
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        meta = yaml.safe_load(f)
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        cargo = tomllib.loads(f.read())
    version = cargo["workspace"]["package"]["version"]
    check(str(meta["appVersion"]) == version, f"Chart.yaml appVersion is the workspace's version {version}",
          str(meta["appVersion"]))
    floor = re.search(r">=\s*v?(\d+\.\d+)", meta.get("kubeVersion", ""))
    check(floor and floor.group(1) == KUBE_VERSIONS[0].rsplit(".", 1)[0],
          f"Chart.yaml kubeVersion starts at {KUBE_VERSIONS[0]}, the oldest version validated against")


HANGAR_BIN = os.environ.get("HANGAR_BIN", "")


def check_edge_cases():
    # Two renders generate different secrets, and bad values are refused by the engine.
    a, _ = render({})
    b, _ = render({})
    check(by_kind(a, "Secret")[0]["data"] != by_kind(b, "Secret")[0]["data"],
          "each fresh install generates new secrets (an upgrade keeps the cluster's through `lookup`)")
    check({(o["kind"], o["metadata"]["name"]) for _, o in a} >= {("Secret", f"{RELEASE}-secrets"),
                                                               ("Role", f"{RELEASE}-discovery")},
          "the defaults render a Secret and a Role named after the release")
    for values, message, what in (
            ({"serviceAccount": {"create": False, "name": ""}}, "serviceAccount.name is required",
             "serviceAccount.create=false without a name is refused"),
            ({"dataNode": {"replicas": 2}}, "below replicationFactor",
             "dataNode.replicas below replicationFactor with automatic layout is refused"),
            ({"clusterDomain": "cluster local"}, "is not a DNS domain",
             "a clusterDomain that is not a DNS domain is refused")):
        try:
            render(values)
            check(False, what)
        except helm.HelmError as e:
            check(message in str(e), what, str(e))
    # The longest names: a StatefulSet's name within 52 characters (its pods' revision label
    # adds 11 and must stay within 63), every other name within 63.
    long_docs, _ = render({"fullnameOverride": "h" * 70})
    too_long = [f"{o['kind']}/{o['metadata']['name']}" for _, o in long_docs
                if len(o["metadata"]["name"]) > (52 if o["kind"] == "StatefulSet" else 63)]
    check(not too_long, "with a 70-character fullnameOverride every name stays within Kubernetes' limits",
          ", ".join(too_long))


def guarded(what, fn, *args):
    """Runs a group of checks; an exception (a chart that renders something unexpected) is a
    failed check, and the other groups still run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: the checks ran to the end", f"{type(e).__name__}: {e}")
        return None


def main():
    note(f"chart: {os.path.relpath(CHART, ROOT)}")
    note(f"Helm engine: helm-python-sdk {helm.__version__}, libhelm_c {helm.helm_c_version()}, "
         f"Helm SDK {helm.helm_sdk_version()} ({helm.library_path})")
    note(f"kubernetes-validate {kubernetes_validate.__version__}: Kubernetes {', '.join(KUBE_VERSIONS)}, strict")
    if HANGAR_BIN and not os.access(HANGAR_BIN, os.X_OK):
        check(False, f"HANGAR_BIN={HANGAR_BIN} is an executable")
    if not HANGAR_BIN:
        note("HANGAR_BIN is not set: the rendered config files are not loaded by the binary")
    guarded("chart metadata", check_chart_metadata)
    guarded("validator", check_validator_is_strict)
    crd = guarded("CRD", check_crd)
    if crd:
        guarded("CRD samples", check_samples, crd)
    for label, values in COMBOS.items():
        note(f"--- values: {label} {json.dumps(values) if values else '(chart defaults)'}")
        lint(label, values)
        try:
            docs, files = render(values)
        except helm.HelmError as e:
            check(False, f"{label}: Helm renders the chart", str(e))
            continue
        check(True, f"{label}: Helm renders the chart")
        guarded(label, check_rendered, label, values, docs, files)
    note("--- edge cases")
    guarded("edge cases", check_edge_cases)
    note("--- simulated install")
    guarded("simulated install", check_simulated_install)
    note("--- documentation")
    guarded("documentation", check_docs)
    print(f"{results['passed']} passed, {results['failed']} failed", flush=True)
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
