"""The Docker and Kubernetes files under docker/: structure checks that run anywhere,
and a real `docker compose config` + `up` where a Docker engine answers."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the compose and Kubernetes files (pip install '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
CRONJOB = DOCKER / "k8s" / "cronjob.yaml"
ADVISOR_DOCKERFILE = DOCKER / "Dockerfile"
POSTGRES_DOCKERFILE = DOCKER / "postgres" / "Dockerfile"

# The only password value allowed in plain text: the documented local example.
EXAMPLE_PASSWORD = "example"


def yaml_files() -> list[Path]:
    return sorted(p for p in DOCKER.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuation lines joined."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    return out


def unescape_compose(text: str) -> str:
    """What the container's shell receives: compose turns $$ into $."""
    return text.replace("$$", "$")


# --- every YAML file ------------------------------------------------------------


def test_yaml_files_exist():
    names = {p.relative_to(DOCKER).as_posix() for p in yaml_files()}
    assert {"compose.yaml", "k8s/cronjob.yaml"} <= names


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_yaml_parses(path):
    docs = load_all(path)
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in docs)


# --- compose ----------------------------------------------------------------------


def test_compose_services():
    services = compose()["services"]
    assert {"primary", "replica", "advisor"} <= set(services)


def test_compose_primary_healthcheck_and_volumes():
    c = compose()
    primary = c["services"]["primary"]
    test = primary["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    mounts = {v.split(":")[1] for v in primary["volumes"]}
    assert "/var/lib/postgresql/data" in mounts and "/logs" in mounts
    assert primary["build"]["context"] == "./postgres"


def test_compose_named_volumes_are_declared():
    c = compose()
    declared = set(c.get("volumes") or {})
    used = set()
    for _name, svc in c["services"].items():
        for v in svc.get("volumes", []):
            source = v.split(":")[0] if isinstance(v, str) else v["source"]
            if not source.startswith((".", "/", "~")):
                used.add(source)
    assert used, "no named volumes used"
    assert used <= declared, f"volumes used but not declared: {sorted(used - declared)}"
    assert {"primary-data", "replica-data", "pg-logs", "reports"} <= declared


def test_compose_replica_clones_the_primary_after_it_is_healthy():
    c = compose()
    replica = c["services"]["replica"]
    assert replica["depends_on"]["primary"]["condition"] == "service_healthy"
    assert replica["entrypoint"] == ["replica-entrypoint.sh"]
    assert replica["image"] == c["services"]["primary"]["image"]
    script = (DOCKER / "postgres" / "replica-entrypoint.sh").read_text()
    call = re.search(r"pg_basebackup(.*?)(?:\n\S|\nfi)", script, re.S).group(1)
    for flag in ("-h", "-D", "-R", "-X stream"):
        assert flag in call, f"pg_basebackup is missing {flag}"
    assert "PG_VERSION" in script, "the replica must clone only when its data directory is empty"
    assert 'exec docker-entrypoint.sh "$@"' in script
    assert os.access(DOCKER / "postgres" / "replica-entrypoint.sh", os.X_OK)


def test_compose_advisor_runs_nightly_and_writes_reports():
    c = compose()
    adv = c["services"]["advisor"]
    assert adv["depends_on"]["primary"]["condition"] == "service_healthy"
    assert adv["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / adv["build"]["context"] / adv["build"]["dockerfile"]).resolve() == ADVISOR_DOCKERFILE
    mounts = {v.split(":")[1]: v for v in adv["volumes"]}
    assert mounts["/logs"].endswith(":ro") and "/reports" in mounts
    # the logs volume is the one the primary writes
    assert mounts["/logs"].split(":")[0] in {v.split(":")[0] for v in c["services"]["primary"]["volumes"]}
    script = unescape_compose(adv["command"][0])
    assert "while true" in script and "sleep" in script
    assert re.search(r"advisor scan .*--log '/logs/postgresql\*\.log'.*--format json --output \"/reports/scan-\$day\.json\"", script.replace("\\\n", " "))
    assert re.search(r"advisor suggest-indexes .*--format sql --output \"/reports/indexes-\$day\.sql\"", script.replace("\\\n", " "))
    assert adv["environment"]["ADVISOR_INTERVAL_SECONDS"].endswith(":-86400}")
    assert adv["entrypoint"] == ["sh", "-c"]


def test_compose_advisor_loop_runs(tmp_path):
    """The loop script, with stub `advisor` and `sleep` commands: both commands run
    with a dated output path, a failing run does not end the loop, and it sleeps the interval."""
    sh = shutil.which("sh")
    if not sh:
        pytest.skip("no POSIX sh on this machine")
    script = unescape_compose(compose()["services"]["advisor"]["command"][0])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "advisor").write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\nexit 2\n')
    # The second sleep ends the test: kill the loop's shell.
    (bin_dir / "sleep").write_text(
        f'#!/bin/sh\necho "sleep $*" >> {shlex.quote(str(calls))}\n'
        f'[ "$(grep -c ^sleep {shlex.quote(str(calls))})" -ge 2 ] && kill -TERM $PPID\nexit 0\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ADVISOR_DSN": "postgresql://advisor@primary:5432/app", "ADVISOR_INTERVAL_SECONDS": "86400"}
    subprocess.run([sh, "-c", script], env=env, timeout=20, capture_output=True)
    lines = calls.read_text().splitlines()
    day = time.strftime("%Y-%m-%d")
    assert lines[0].startswith("scan --dsn postgresql://advisor@primary:5432/app --log /logs/postgresql*.log "
                               "--log-line-prefix %m [%p] %q%u@%d app=%a  --pg-stat-statements")
    assert lines[0].endswith(f"--format json --output /reports/scan-{day}.json")
    assert lines[1].startswith("suggest-indexes ") and lines[1].endswith(f"--format sql --output /reports/indexes-{day}.sql")
    assert lines[2] == "sleep 86400"
    assert lines[3].startswith("scan "), "a failing run must not end the loop"


def test_compose_passwords_come_from_the_environment():
    """Every password-ish value is a ${VAR:-example} interpolation, or comes from the environment (no literals)."""
    c = compose()
    for name, svc in c["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if "PASSWORD" in key.upper():
                assert re.fullmatch(r"\$\{[A-Z_]+(:-" + EXAMPLE_PASSWORD + r")?\}", str(value)), f"{name}.{key} = {value!r}"
            if key.upper().endswith("DSN"):
                assert not re.search(r"//[^/@:]+:[^@/]+@", str(value)), f"{name}.{key} has a password in the DSN"
    for line in COMPOSE.read_text().splitlines():
        if re.search(r"PASSWORD\S*:\s*\S", line):
            assert "# local example value" in line, f"undocumented password default: {line.strip()}"


def test_postgres_settings():
    conf = (DOCKER / "postgres" / "advisor.conf").read_text()
    settings = {}
    for line in conf.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            k, _, v = line.partition("=")
            settings[k.strip()] = v.strip().strip("'")
    assert settings["shared_preload_libraries"] == "pg_stat_statements,auto_explain"
    assert settings["log_min_duration_statement"] == "250"
    assert settings["log_line_prefix"] == "%m [%p] %q%u@%d app=%a "
    assert settings["logging_collector"] == "on"
    assert settings["log_directory"] == "/logs"
    assert settings["wal_level"] == "replica"
    assert int(settings["max_wal_senders"]) >= 2
    assert settings["hot_standby"] == "on"
    # the advisor's glob matches the file names the server writes, and it is told the server's prefix
    script = compose()["services"]["advisor"]["command"][0]
    assert script.count(f"--log-line-prefix '{settings['log_line_prefix']}'") == 2
    assert re.fullmatch(r"postgresql.*\.log", settings["log_filename"])


def test_postgres_init_script_enables_extensions_and_replication():
    script = (DOCKER / "postgres" / "initdb" / "10-advisor.sh").read_text()
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" in script
    assert "CREATE EXTENSION IF NOT EXISTS hypopg" in script
    assert "host replication replicator" in script
    assert "REPLICATION LOGIN" in script
    assert os.access(DOCKER / "postgres" / "initdb" / "10-advisor.sh", os.X_OK)


@pytest.mark.parametrize("script", ["postgres/initdb/10-advisor.sh", "postgres/replica-entrypoint.sh"])
def test_shell_scripts_parse(script):
    bash = shutil.which("bash")
    if not bash:
        pytest.skip("no bash on this machine")
    r = subprocess.run([bash, "-n", str(DOCKER / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- Kubernetes -----------------------------------------------------------------------


def cronjob() -> dict:
    docs = load_all(CRONJOB)
    jobs = [d for d in docs if d.get("kind") == "CronJob"]
    assert len(jobs) == 1
    return jobs[0]


def test_cronjob_shape():
    job = cronjob()
    assert job["apiVersion"] == "batch/v1"
    schedule = job["spec"]["schedule"]
    assert len(schedule.split()) == 5, schedule
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    assert "advisor" in container["image"]
    script = " ".join(container.get("command", []) + container.get("args", []))
    assert "advisor scan" in script and "advisor suggest-indexes" in script
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_cronjob_dsn_from_a_secret_and_reports_on_a_pvc():
    docs = load_all(CRONJOB)
    job = cronjob()
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ADVISOR_DSN"]["valueFrom"]["secretKeyRef"]["name"]
    assert "value" not in env["ADVISOR_DSN"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/reports"] in claims
    pvcs = {d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    assert claims[mounts["/reports"]] in pvcs
    assert not any(d.get("kind") == "Secret" for d in docs), "the Secret is created by the user, never committed"


def _strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif node is not None:
        yield str(node)


def test_no_plaintext_passwords():
    """No DSN with a password and no password setting in the manifests, except the documented
    `example` value (compose) and the `<password>` placeholder in comments."""
    for path in yaml_files():
        for s in _strings(load_all(path)):
            for m in re.finditer(r"postgres(?:ql)?://[^:/@\s]+:([^@\s]+)@", s):
                assert m.group(1) in (EXAMPLE_PASSWORD, "<password>"), f"{path}: password in a DSN"
            for m in re.finditer(r"(?i)\bpassword\s*[=:]\s*([^\s,;'\"]+)", s):
                assert m.group(1) in (EXAMPLE_PASSWORD, "<password>") or m.group(1).startswith("${"), f"{path}: {m.group(0)}"
        for d in load_all(path):
            if d.get("kind") == "Secret":
                pytest.fail(f"{path}: a Secret with data is committed")


# --- Dockerfiles ------------------------------------------------------------------------


def test_advisor_dockerfile():
    ins = dockerfile_instructions(ADVISOR_DOCKERFILE)
    kinds = [k for k, _ in ins]
    assert kinds[0] == "FROM" and ins[0][1] == "python:3.11-slim"
    copies = " ".join(a for k, a in ins if k == "COPY")
    for src in ("pyproject.toml", "advisor/", "fixtures/", "README.md"):
        assert src in copies
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert "pip install --no-cache-dir ." in runs
    users = [a for k, a in ins if k == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    # the last USER comes after every RUN (nothing runs as root after the switch back)
    assert max(i for i, (k, _) in enumerate(ins) if k == "RUN") < max(i for i, (k, _) in enumerate(ins) if k == "USER")
    assert dict(ins)["ENTRYPOINT"] == '["advisor"]'
    assert dict(ins)["CMD"] == '["--help"]'
    # every COPY source is inside the repository and not excluded by the Dockerfile's .dockerignore
    for k, a in ins:
        if k == "COPY":
            for src in a.split()[:-1]:
                assert (ROOT / src).exists(), src


def test_advisor_dockerignore_keeps_what_the_dockerfile_copies():
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for src in ("pyproject.toml", "README.md", "advisor/", "fixtures/"):
        assert "!" + src in ignore


def test_postgres_dockerfile():
    ins = dockerfile_instructions(POSTGRES_DOCKERFILE)
    assert ins[0] == ("FROM", "postgres:15")
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert "postgresql-${PG_MAJOR}-hypopg" in runs or "postgresql-15-hypopg" in runs
    assert "rm -rf /var/lib/apt/lists" in runs
    copies = [a.split() for k, a in ins if k == "COPY"]
    for *srcs, _dst in copies:
        for src in srcs:
            assert (POSTGRES_DOCKERFILE.parent / src).exists(), src
    assert any(dst.startswith("/docker-entrypoint-initdb.d") for *_, dst in copies)
    users = [a for k, a in ins if k == "USER"]
    assert users and users[-1] not in ("root", "0")


# --- a real engine -------------------------------------------------------------------------


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_answers(), reason="no Docker engine answers on this machine")
def test_compose_config_and_up(tmp_path):
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.fail("a Docker engine answers but the compose plugin is missing: install docker-compose-plugin")
    project = f"advisor-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PRIMARY_PORT": "0", "REPLICA_PORT": "0", "ADVISOR_INTERVAL_SECONDS": "3600"}
    base = ["docker", "compose", "-f", str(COMPOSE), "-p", project]
    r = subprocess.run(base + ["config", "--quiet"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    try:
        r = subprocess.run(base + ["up", "-d", "--build", "--wait", "--wait-timeout", "300", "primary", "replica"],
                           capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        # the replica streams from the primary
        q = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        r = subprocess.run(base + ["exec", "-T", "primary", "psql", "-U", "postgres", "-d", "app", "-Atc", q],
                           capture_output=True, text=True, env=env)
        assert r.stdout.strip() == "1", r.stdout + r.stderr
        r = subprocess.run(base + ["exec", "-T", "replica", "psql", "-U", "postgres", "-Atc", "SELECT pg_is_in_recovery()"],
                           capture_output=True, text=True, env=env)
        assert r.stdout.strip() == "t", r.stdout + r.stderr
        # one advisor run, reports on the shared volume
        r = subprocess.run(base + ["up", "-d", "--build", "advisor"], capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.monotonic() + 300
        listing = ""
        while time.monotonic() < deadline:
            listing = subprocess.run(base + ["exec", "-T", "advisor", "sh", "-c", "ls /reports"],
                                     capture_output=True, text=True, env=env).stdout
            if ".json" in listing and ".sql" in listing:
                break
            time.sleep(3)
        assert ".json" in listing and ".sql" in listing, listing
    finally:
        subprocess.run(base + ["down", "-v", "--remove-orphans"], capture_output=True, env=env, timeout=300)
