#!/usr/bin/env python3
"""Validates deploy/scale-out (the compose file and the Kubernetes example) without pulling an image: the files'
structure (every reference resolves: services, volumes, selectors, ports, secrets) and every weir instance's
configuration, run through `weir up --check` with the command line and environment the file gives it. With
`docker compose` on the machine, `docker compose config` checks the compose file against its specification too.

Usage: check-deploy.py WEIR_BINARY [DEPLOY_DIR]; exits non-zero naming each problem."""

import os
import shutil
import subprocess
import sys

import yaml

weir = sys.argv[1]
root = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "deploy", "scale-out")
problems = []
checked = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def check_weir(where, args, env):
    """Runs `weir up --check` with the instance's arguments and WEIR_* environment."""
    if not args or args[0] != "up":
        problem(where, f"a weir instance must run `weir up`, not {args}")
        return
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    clean.update({k: str(v) for k, v in env.items()})
    clean["WEIR_DATA_DIR"] = os.environ.get("TMPDIR", "/tmp")
    out = subprocess.run([weir, *args, "--check"], env=clean, capture_output=True, text=True)
    if out.returncode != 0:
        problem(where, f"weir up --check refused it: {out.stderr.strip()}")
    else:
        checked.append(where)


def check_compose(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    services = doc.get("services") or {}
    if not services:
        problem(path, "no services")
    for name, s in services.items():
        where = f"{path}: service {name}"
        if "image" not in s and "build" not in s:
            problem(where, "neither image nor build")
        for dep in s.get("depends_on") or {}:
            if dep not in services:
                problem(where, f"depends on {dep}, which is not a service")
        for v in s.get("volumes") or []:
            source = v.split(":")[0]
            if source.startswith("./") and not os.path.exists(os.path.join(os.path.dirname(path), source)):
                problem(where, f"mounts {source}, which does not exist")
        build = s.get("build")
        if isinstance(build, dict):
            dockerfile = os.path.join(os.path.dirname(path), build.get("context", "."), build.get("dockerfile", "Dockerfile"))
            if not os.path.exists(dockerfile):
                problem(where, f"builds from {dockerfile}, which does not exist")
        if s.get("image", "").startswith("weir"):
            check_weir(where, list(map(str, s.get("command") or ["up"])), s.get("environment") or {})
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        env = dict(os.environ, TANSU_SCHEMA=os.environ.get("TANSU_SCHEMA", "/dev/null"))
        out = subprocess.run(["docker", "compose", "-f", path, "config", "-q"], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            problem(path, f"docker compose config: {out.stderr.strip()}")
        else:
            checked.append(f"{path} (docker compose config)")


def check_kubernetes(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    labels_of = []
    for d in docs:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in d:
                problem(path, f"a document without {key}")
        name = f"{path}: {d.get('kind')} {d.get('metadata', {}).get('name')}"
        if d.get("kind") != "Deployment":
            continue
        spec = d["spec"]
        template_labels = spec["template"]["metadata"].get("labels", {})
        for k, v in spec["selector"]["matchLabels"].items():
            if template_labels.get(k) != v:
                problem(name, f"the selector's {k}={v} is not on the pod template")
        ports = set()
        for c in spec["template"]["spec"]["containers"]:
            ports |= {p.get("name") for p in c.get("ports", [])}
            env = {}
            for source in c.get("envFrom", []):
                secret = source.get("secretRef", {}).get("name")
                if secret not in secrets:
                    problem(name, f"takes its environment from secret {secret}, which is not defined")
                else:
                    env.update(secrets[secret].get("stringData", {}))
            for e in c.get("env", []):
                env[e["name"]] = e["value"]
            for probe in ("readinessProbe", "livenessProbe"):
                port = (c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in {p.get("name") for p in c.get("ports", [])}:
                    problem(name, f"{probe} names port {port}, which the container does not have")
            if c.get("image", "").startswith("weir"):
                check_weir(f"{name} container {c['name']}", list(map(str, c.get("args") or ["up"])), env)
        labels_of.append((template_labels, ports))
    for d in docs:
        if d.get("kind") != "Service":
            continue
        name = f"{path}: Service {d['metadata']['name']}"
        selector = d["spec"].get("selector", {})
        matches = [ports for labels, ports in labels_of if all(labels.get(k) == v for k, v in selector.items())]
        if not matches:
            problem(name, f"its selector {selector} matches no Deployment's pods")
        for p in d["spec"].get("ports", []):
            target = p.get("targetPort")
            if isinstance(target, str) and not any(target in ports for ports in matches):
                problem(name, f"targets port {target}, which its pods do not name")


check_compose(os.path.join(root, "compose.yaml"))
check_kubernetes(os.path.join(root, "kubernetes.yaml"))
for p in problems:
    print(f"error: {p}", file=sys.stderr)
for c in checked:
    print(f"ok: {c}")
sys.exit(1 if problems else 0)
