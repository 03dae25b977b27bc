"""helm_facts.py — checks of what `helm template` rendered from the filewatcher
chart, for test/deploy/helm-check.sh (run with kubernetes-validate's venv
python, which has PyYAML and jsonschema):

  helm_facts.py servicemonitor SCHEMA FILE
      every ServiceMonitor in FILE against SCHEMA (a strict JSON schema: see
      servicemonitor-v1.schema.json); kubernetes-validate has none for it
  helm_facts.py facts SET FILE
      the facts value set SET must render (capabilities, mounts, security
      context, OTLP wiring, ...), and rules the API server enforces that no
      OpenAPI schema can express

Prints one line per failed check and exits 1 if any failed.
"""

import json
import sys

import jsonschema
import yaml

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
    return cond


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def servicemonitor(schema_path, path):
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema)
    mons = by_kind(load(path), "ServiceMonitor")
    for m in mons:
        for e in sorted(validator.iter_errors(m), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in e.path) or "(top)"
            check(False, f"ServiceMonitor {m.get('metadata', {}).get('name')}: {where}: {e.message}")
    return len(mons)


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def env_value(c, name):
    e = env_of(c).get(name)
    return None if e is None else e.get("value")


def mounts(c):
    return {m["name"]: m for m in c.get("volumeMounts", [])}


def host_path_volumes(pod):
    return {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v}


def facts(name, path):
    docs = load(path)
    kinds = sorted(d["kind"] for d in docs)
    dss = by_kind(docs, "DaemonSet")
    if not check(len(dss) == 1, f"one DaemonSet rendered, not {len(dss)}"):
        return
    ds = dss[0]
    pod = ds["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    inits = {c["name"]: c for c in pod.get("initContainers", [])}
    check(sorted(containers) == ["exporter", "loader"], f"containers {sorted(containers)}, not exporter + loader")
    loader, exporter = containers.get("loader", {}), containers.get("exporter", {})
    hostpaths = host_path_volumes(pod)

    # The pod: no host namespaces but the user namespace, no API token.
    check(pod.get("hostUsers") is True, "pod: hostUsers is not true (capabilities must count in the initial user namespace)")
    for f in ("hostPID", "hostNetwork", "hostIPC"):
        check(not pod.get(f), f"pod: {f} is set")
    check(pod.get("automountServiceAccountToken") is False, "pod: the service account token is mounted")
    check(ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items(),
          "DaemonSet: selector does not match the pod's labels")

    # Every container: hardened, resources from measured memory.
    for cname, c in {**containers, **inits}.items():
        sc = c.get("securityContext", {})
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{cname}: capabilities not dropped (drop: [ALL])")
        check(sc.get("readOnlyRootFilesystem") is True, f"{cname}: root file system not read-only")
        check(not sc.get("privileged"), f"{cname}: privileged")
        check(sc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation is not false")
        check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{cname}: seccomp is not RuntimeDefault")
        # The API server refuses allowPrivilegeEscalation: false with the
        # capability spelled CAP_SYS_ADMIN (validation, not the schema).
        check("CAP_SYS_ADMIN" not in sc.get("capabilities", {}).get("add", []),
              f"{cname}: CAP_SYS_ADMIN with allowPrivilegeEscalation false is refused by the API server")
        res = c.get("resources", {})
        check("memory" in res.get("requests", {}) and "memory" in res.get("limits", {}),
              f"{cname}: no memory request and limit")
        for m in c.get("volumeMounts", []):
            if m["name"] in hostpaths and m["name"] != "bpf-pins":
                check(m.get("readOnly") is True, f"{cname}: host path {hostpaths[m['name']]} mounted writable")
        for e in c.get("env", []):
            check(not e["name"].startswith("FILEWATCHER_") or "valueFrom" in e or isinstance(e.get("value"), str),
                  f"{cname}: env {e['name']} is not a string")

    for i in inits:
        check(i in ("module-select", "module-build"), f"unexpected init container {i}")

    # The loader and the exporter meet on the socket in the shared emptyDir.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    check("emptyDir" in volumes.get("run", {}), "the run volume is not an emptyDir")
    for c in (loader, exporter):
        check(mounts(c).get("run", {}).get("mountPath") == "/run/filewatcher", f"{c.get('name')}: /run/filewatcher not mounted")
    check(env_value(loader, "FILEWATCHER_LISTEN") == env_value(exporter, "FILEWATCHER_EXPORTER_LOADER") ==
          "unix:///run/filewatcher/loader.sock", "loader and exporter addresses differ")
    lsc, esc = loader.get("securityContext", {}), exporter.get("securityContext", {})
    check(lsc.get("runAsUser") == 0, "loader: not uid 0")
    check(esc.get("runAsNonRoot") is True and esc.get("runAsUser", 0) != 0, "exporter: not a non-root uid")
    check(not esc.get("capabilities", {}).get("add"), "exporter: has capabilities")
    check(esc.get("runAsGroup") == lsc.get("runAsGroup") and
          env_value(loader, "FILEWATCHER_SOCKET_GROUP") == str(lsc.get("runAsGroup")),
          "exporter's group is not the loader socket's group")
    ports = {p["name"]: p for p in exporter.get("ports", [])}
    check("metrics" in ports, "exporter: no containerPort named metrics")
    check(env_value(exporter, "FILEWATCHER_EXPORTER_LISTEN") == f"0.0.0.0:{ports.get('metrics', {}).get('containerPort')}",
          "exporter: does not listen on its metrics port")

    caps = set(lsc.get("capabilities", {}).get("add", []))
    probe = env_value(loader, "FILEWATCHER_PROBE")
    args = exporter.get("args", [])
    eenv = env_of(exporter)

    def uses_module(expected_probe, expect_sys_admin=True, init="module-select"):
        check(probe == expected_probe, f"loader: FILEWATCHER_PROBE={probe}, not {expected_probe}")
        want = {"SYS_MODULE", "BPF", "PERFMON"} | ({"SYS_ADMIN"} if expect_sys_admin else set())
        check(caps == want, f"loader: capabilities {sorted(caps)}, not {sorted(want)}")
        tr = mounts(loader).get("tracefs")
        check(tr is not None and tr["mountPath"] == "/sys/kernel/tracing" and tr.get("readOnly") is True,
              "loader: tracefs not mounted read-only at /sys/kernel/tracing")
        if init:
            check(list(inits) == [init], f"init containers {list(inits)}, not [{init}]")
            check(env_value(loader, "FILEWATCHER_MODULE") == "/opt/filewatcher/filewatcher.ko",
                  "loader: FILEWATCHER_MODULE is not the init container's module")
            check(mounts(loader).get("module", {}).get("readOnly") is True, "loader: module volume not read-only")
            lm = [m for m in inits.get(init, {}).get("volumeMounts", []) if m["name"] == "host-lib-modules"]
            check(len(lm) == 1 and lm[0].get("readOnly") is True and hostpaths.get("host-lib-modules") == "/lib/modules",
                  f"{init}: /lib/modules not mounted read-only")
        check("host-lib-modules" not in mounts(loader), "loader: /lib/modules mounted (only the init container needs it)")

    if name == "defaults":
        uses_module("auto")
        check(kinds == ["DaemonSet", "Service", "ServiceAccount"], f"kinds {kinds}")
        check("--otlp-endpoint=http://$(HOST_IP):4318" in args and "--otlp-protocol=http/protobuf" in args,
              f"exporter: OTLP not pushed to the node's Collector: {args}")
        check(eenv.get("HOST_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP",
              "exporter: HOST_IP is not status.hostIP")
        check(env_value(loader, "FILEWATCHER_PIN_DIR") == mounts(loader).get("bpf-pins", {}).get("mountPath"),
              "loader: FILEWATCHER_PIN_DIR is not the bpf-pins mount")
        check(hostpaths.get("bpf-pins", "").startswith("/sys/fs/bpf/"), "bpf-pins is not in /sys/fs/bpf")
        check(not any(p.startswith("/sys/fs/cgroup") for p in hostpaths.values()), "cgroupfs mounted by default")
    elif name == "module":
        uses_module("kmod")
        script = inits.get("module-select", {}).get("args", [""])[0]
        check('[ "$PROBE" = module ]' in script and "exit 1" in script, "module-select: does not fail without a module")
        check(env_value(inits.get("module-select", {}), "PROBE") == "module", "module-select: PROBE is not module")
    elif name == "ebpf":
        check(probe == "bpf", f"loader: FILEWATCHER_PROBE={probe}, not bpf")
        check(caps == {"BPF", "PERFMON"}, f"loader: capabilities {sorted(caps)}, not BPF PERFMON")
        check(not inits, f"init containers {list(inits)} with the eBPF-only probe")
        check(not any(p.startswith("/lib/modules") or "tracing" in p for p in hostpaths.values()),
              f"/lib/modules or tracefs mounted with the eBPF-only probe: {hostpaths}")
        check("FILEWATCHER_MODULE" not in env_of(loader), "loader: FILEWATCHER_MODULE with the eBPF-only probe")
        check(set(hostpaths.values()) == {"/sys/fs/bpf/filewatcher"}, f"host paths {hostpaths}, not only the pin dir")
    elif name == "servicemonitor":
        mons, svcs = by_kind(docs, "ServiceMonitor"), by_kind(docs, "Service")
        if check(len(mons) == 1 and len(svcs) == 1, f"{len(mons)} ServiceMonitors, {len(svcs)} Services, not 1 and 1"):
            m, svc = mons[0], svcs[0]
            check(svc["spec"].get("clusterIP") == "None", "Service is not headless")
            check(svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items(),
                  "Service does not select the pods")
            check(m["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
                  "ServiceMonitor does not select the Service")
            svc_ports = {p["name"] for p in svc["spec"]["ports"]}
            check(all(e.get("port") in svc_ports for e in m["spec"]["endpoints"]),
                  "ServiceMonitor endpoint port is not a port of the Service")
            check(m["spec"]["namespaceSelector"].get("matchNames") == [m["metadata"]["namespace"]],
                  "ServiceMonitor does not look in its own namespace")
            check(m["metadata"].get("labels", {}).get("release") == "prometheus", "serviceMonitor.labels not applied")
    elif name == "no-otlp":
        check(not any(a.startswith("--otlp") for a in args), f"exporter: OTLP flags with otlp.enabled=false: {args}")
        check(not any(n == "HOST_IP" or n.startswith("OTEL_") for n in eenv), "exporter: OTLP environment with otlp.enabled=false")
    elif name == "build":
        uses_module("auto", init="module-build")
        bm = mounts(inits.get("module-build", {}))
        for vol, hp in (("host-usr-src", "/usr/src"), ("host-extra-0", "/usr/lib/linux-kbuild-6.1")):
            check(bm.get(vol, {}).get("readOnly") is True and hostpaths.get(vol) == hp, f"module-build: {hp} not read-only")
        check(bm.get("module-work", {}).get("mountPath") == "/work", "module-build: no writable /work")
    elif name == "least":
        # perf_event_paranoid 2, a module the node loaded, no pinning, OTLP over gRPC,
        # the service label and a web configuration.
        uses_module("auto", expect_sys_admin=False, init=None)
        check(not inits, f"init containers {list(inits)} with module.source=loaded")
        check("FILEWATCHER_MODULE" not in env_of(loader), "loader: FILEWATCHER_MODULE with module.source=loaded")
        check(env_value(loader, "FILEWATCHER_PIN_DIR") == "" and "bpf-pins" not in hostpaths, "pinning not off")
        check("--otlp-endpoint=http://$(HOST_IP):4317" in args and "--otlp-protocol=grpc" in args,
              f"exporter: OTLP/gRPC not to the node's port 4317: {args}")
        check(mounts(exporter).get("host-cgroup", {}).get("readOnly") is True and
              env_value(exporter, "FILEWATCHER_EXPORTER_CGROUP_ROOT") == mounts(exporter)["host-cgroup"]["mountPath"],
              "exporter: cgroupfs not mounted read-only for the service label")
        check(env_value(exporter, "FILEWATCHER_EXPORTER_WEB_CONFIG_FILE") == "/etc/filewatcher/web/web-config.yml" and
              "secret" in volumes.get("web-config", {}), "exporter: web configuration not mounted from the Secret")
    else:
        check(False, f"unknown value set {name}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "servicemonitor":
        n = servicemonitor(sys.argv[2], sys.argv[3])
        check(n > 0, f"no ServiceMonitor in {sys.argv[3]}")
    elif len(sys.argv) == 4 and sys.argv[1] == "facts":
        facts(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for f in failures:
        print(f"  {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
