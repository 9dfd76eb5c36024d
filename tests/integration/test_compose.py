"""test_compose.py - docker-compose.yml, validated without a Docker engine.

Debian's docker-compose (1.29) parses, interpolates and schema-checks the
file with `docker-compose config`, which needs no engine. The parsed result
is then checked for the stack docs/operations.md promises: Redis with an append-only
file and a health check, two Herald nodes in cluster mode (shared secret and
API key from the environment, distinct node ids, started once Redis is
healthy), nginx publishing the port with deploy/nginx/herald.conf, whose
upstream names the two nodes. Broken copies of the file must be caught, so
the checks are shown to bite.
"""

import os
import re
import shutil
import subprocess
import tempfile

import yaml

from harness import NGINX_BIN, REPO, nginx_site, nginx_site_addresses, nginx_user_directive, run_tests

DOCKER_COMPOSE = "/usr/bin/docker-compose"
COMPOSE_FILE = os.path.join(REPO, "docker-compose.yml")
ENV = {"HERALD_JWT_SECRET": "compose-test-secret-0123456789abcdef", "HERALD_API_KEY": "compose-test-key"}
NODES = ("herald1", "herald2")
SENTINEL_PROFILE = ("redis-replica", "sentinel1", "sentinel2", "sentinel3")


def compose(args, env=None, path=COMPOSE_FILE):
    """Runs docker-compose on `path` (paths in it resolve against the repo)
    with only `env` of Herald's/compose's variables set."""
    assert os.access(DOCKER_COMPOSE, os.X_OK), \
        "%s missing: install Debian's docker-compose (./setup.sh deps test)" % DOCKER_COMPOSE
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("HERALD_", "COMPOSE_", "DOCKER_"))}
    base.update(env if env is not None else ENV)
    return subprocess.run([DOCKER_COMPOSE, "--project-directory", REPO, "-f", path] + list(args),
                          env=base, capture_output=True, text=True, timeout=60)


def parsed(path=COMPOSE_FILE, env=None):
    p = compose(["config"], env, path)
    assert p.returncode == 0, "docker-compose config failed (%d): %s" % (p.returncode, p.stderr)
    return yaml.safe_load(p.stdout)


def healthcheck(svc, name):
    hc = svc.get("healthcheck") or {}
    test = hc.get("test")
    assert test and not hc.get("disable"), "%s has no healthcheck" % name
    return " ".join(test) if isinstance(test, list) else test


def depends_healthy(svc, name, on):
    deps = svc.get("depends_on") or {}
    assert isinstance(deps, dict) and on in deps, "%s does not depend on %s: %r" % (name, on, deps)
    assert deps[on].get("condition") == "service_healthy", \
        "%s starts before %s is healthy: %r" % (name, on, deps[on])


def mounts(svc):
    """{target: source} of a service's volumes (long or short syntax)."""
    out = {}
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out[v["target"]] = v.get("source")
        else:
            parts = v.split(":")
            out[parts[1]] = parts[0]
    return out


def check_stack(cfg, env=ENV, port=8080):
    """Raises AssertionError unless `cfg` (docker-compose config, parsed) is
    the stack docs/operations.md describes."""
    # the services of an opt-in profile (sentinel) are test_sentinel_profile's
    services = {n: s for n, s in (cfg.get("services") or {}).items() if not s.get("profiles")}
    assert set(services) == {"redis", "nginx", "prometheus", "grafana"} | set(NODES), \
        "services: %r" % sorted(services)

    redis = services["redis"]
    assert str(redis.get("image", "")).startswith("redis:7"), redis.get("image")
    cmd = redis.get("command") or []
    cmd = cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
    assert "--appendonly" in cmd and cmd[cmd.index("--appendonly") + 1] == "yes", \
        "redis without an append-only file: %r" % cmd
    assert re.search(r"redis-cli\b.*\bping", healthcheck(redis, "redis")), redis["healthcheck"]
    data = mounts(redis).get("/data")
    assert data and data in (cfg.get("volumes") or {}), "redis /data is not a named volume: %r" % data

    node_ids = []
    for name in NODES:
        svc = services[name]
        build = svc.get("build") or {}
        context = build.get("context") if isinstance(build, dict) else build
        assert context and os.path.realpath(context) == os.path.realpath(REPO), \
            "%s is not built from the repository: %r" % (name, build)
        dockerfile = (build.get("dockerfile") if isinstance(build, dict) else None) or "Dockerfile"
        assert os.path.isfile(os.path.join(context, dockerfile)), "%s: no %s" % (name, dockerfile)
        envs = {k: ("" if v is None else str(v)) for k, v in (svc.get("environment") or {}).items()}
        assert envs.get("HERALD_REDIS_URL") == "redis://redis:6379/0", envs.get("HERALD_REDIS_URL")
        assert envs.get("HERALD_JWT_SECRET") == env["HERALD_JWT_SECRET"], \
            "%s: HERALD_JWT_SECRET is not the environment's" % name
        assert envs.get("HERALD_API_KEY") == env["HERALD_API_KEY"], \
            "%s: HERALD_API_KEY is not the environment's" % name
        node_ids.append(envs.get("HERALD_NODE_ID"))
        depends_healthy(svc, name, "redis")
        assert "/readyz" in healthcheck(svc, name) or "/healthz" in healthcheck(svc, name), svc["healthcheck"]
        assert not svc.get("ports"), "%s publishes ports (only nginx should): %r" % (name, svc["ports"])
    assert all(node_ids) and len(set(node_ids)) == len(node_ids), "node ids not distinct: %r" % node_ids

    nginx = services["nginx"]
    assert str(nginx.get("image", "")).startswith("nginx"), nginx.get("image")
    published = {(str(p.get("published")), str(p.get("target"))) if isinstance(p, dict)
                 else tuple(str(p).split(":")[-2:]) for p in nginx.get("ports") or []}
    assert (str(port), "8080") in published, "nginx does not publish %d -> 8080: %r" % (port, published)
    vols = mounts(nginx)
    site = os.path.join(REPO, "deploy", "nginx", "herald.conf")
    assert any(src and os.path.realpath(src) == site for src in vols.values()), \
        "deploy/nginx/herald.conf is not mounted into nginx: %r" % vols
    for target, src in vols.items():
        assert src and os.path.exists(src), "nginx mounts missing %r at %s" % (src, target)
    for name in NODES:
        depends_healthy(nginx, name, name)
    healthcheck(nginx, "nginx")

    # the nginx config proxies to these services on the port they serve,
    # and listens on the port compose publishes
    listen, upstreams = nginx_site_addresses(site)
    assert sorted(upstreams) == sorted("%s:8080" % n for n in NODES), \
        "herald.conf upstream %r does not name the compose nodes %r" % (upstreams, NODES)
    assert listen == "8080", "herald.conf listens on %r, compose publishes 8080" % listen

    check_monitoring(cfg, services)


def loopback_ports(svc):
    """{target: host ip} of a service's published ports."""
    out = {}
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out[str(p.get("target"))] = p.get("host_ip", "")
        else:
            parts = str(p).split("/")[0].split(":")
            out[parts[-1]] = parts[0] if len(parts) == 3 else ""
    return out


def check_monitoring(cfg, services):
    """Prometheus scrapes every node with deploy/prometheus/prometheus.yml;
    Grafana is provisioned with that Prometheus and deploy/grafana/herald.json."""
    prom, graf = services["prometheus"], services["grafana"]
    assert str(prom.get("image", "")).startswith("prom/prometheus"), prom.get("image")
    config = mounts(prom).get("/etc/prometheus/prometheus.yml")
    assert config and os.path.realpath(config) == os.path.join(REPO, "deploy", "prometheus", "prometheus.yml"), \
        "deploy/prometheus/prometheus.yml is not Prometheus' config: %r" % mounts(prom)
    with open(config) as f:
        scrape = yaml.safe_load(f)
    herald_jobs = [j for j in scrape["scrape_configs"] if j["job_name"] == "herald"]
    assert herald_jobs, "no herald job in prometheus.yml"
    targets = sorted(t for sc in herald_jobs[0]["static_configs"] for t in sc["targets"])
    assert targets == sorted("%s:8080" % n for n in NODES), \
        "prometheus.yml scrapes %r, the compose nodes are %r" % (targets, NODES)
    assert herald_jobs[0].get("metrics_path", "/metrics") == "/metrics"
    for name in NODES:
        assert name in (prom.get("depends_on") or {}), "prometheus does not depend on %s" % name
    assert loopback_ports(prom).get("9090") == "127.0.0.1", "Prometheus published beyond loopback"

    assert str(graf.get("image", "")).startswith("grafana/grafana"), graf.get("image")
    gm = mounts(graf)
    prov = gm.get("/etc/grafana/provisioning")
    assert prov and os.path.realpath(prov) == os.path.join(REPO, "deploy", "grafana", "provisioning"), gm
    with open(os.path.join(prov, "dashboards", "herald.yml")) as f:
        provider = yaml.safe_load(f)["providers"][0]
    dash_dir = provider["options"]["path"].rstrip("/")
    dash = gm.get(dash_dir + "/herald.json")
    assert dash and os.path.realpath(dash) == os.path.join(REPO, "deploy", "grafana", "herald.json"), \
        "deploy/grafana/herald.json is not mounted where the provider looks (%s): %r" % (dash_dir, gm)
    with open(os.path.join(prov, "datasources", "prometheus.yml")) as f:
        ds = yaml.safe_load(f)["datasources"][0]
    assert ds["url"] == "http://prometheus:9090", "the datasource is not the prometheus service: %r" % ds["url"]
    assert "prometheus" in (graf.get("depends_on") or {}), graf.get("depends_on")
    assert loopback_ports(graf).get("3000") == "127.0.0.1", "Grafana published beyond loopback"
    for target, src in gm.items():
        assert src and (os.path.exists(src) or src in (cfg.get("volumes") or {})), \
            "grafana mounts missing %r at %s" % (src, target)


def nginx_test_config(d):
    """deploy/nginx/nginx.conf made testable here: paths into d, the site
    file included with its upstreams on loopback (`nginx -t` resolves upstream
    names, and herald1/herald2 exist only inside compose's network)."""
    with open(os.path.join(REPO, "deploy", "nginx", "nginx.conf")) as f:
        text = f.read()
    with open(os.path.join(d, "herald.conf"), "w") as f:
        f.write(nginx_site(["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:8080"))
    temps = "".join("    %s_temp_path %s/%s;\n" % (t, d, t)
                    for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    for old, new in (("user nginx;", nginx_user_directive()),
                     ("/var/log/nginx/", d + "/"),
                     ("/var/run/nginx.pid", d + "/nginx.pid"),
                     ("    include /etc/nginx/herald.conf;\n",
                      temps + "    include %s/herald.conf;\n" % d)):
        assert old in text, "deploy/nginx/nginx.conf no longer has %r: update this test" % old
        text = text.replace(old, new)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


#---- broken copies -------------------------------------------------------------

def broken(edit):
    """A copy of docker-compose.yml changed by edit(text) -> text, in a temp dir."""
    with open(COMPOSE_FILE) as f:
        text = f.read()
    changed = edit(text)
    assert changed != text, "the edit did not apply: the test is out of date"
    d = tempfile.mkdtemp(prefix="herald-compose-")
    path = os.path.join(d, "docker-compose.yml")
    with open(path, "w") as f:
        f.write(changed)
    return d, path


def expect_check_failure(edit, what):
    d, path = broken(edit)
    try:
        p = compose(["config"], path=path)
        if p.returncode != 0:
            return  # docker-compose itself refused it
        try:
            check_stack(yaml.safe_load(p.stdout))
        except AssertionError:
            return
        raise AssertionError("a compose file with %s passed every check" % what)
    finally:
        shutil.rmtree(d, ignore_errors=True)


#---- tests ---------------------------------------------------------------------

def test_config_is_valid():
    p = compose(["config", "-q"])
    assert p.returncode == 0, "docker-compose config -q: %d %s" % (p.returncode, p.stderr)
    p = compose(["config", "--services"])
    # docker-compose 1.29 lists the sentinel profile's services too
    assert sorted(set(p.stdout.split()) - set(SENTINEL_PROFILE)) == \
        sorted(("redis", "nginx", "prometheus", "grafana") + NODES), p.stdout


def test_sentinel_profile():
    """--profile sentinel adds a replica of redis and three sentinels
    watching it (quorum 2), and HERALD_REDIS_URL points the nodes at them;
    without the profile the stack is the one above."""
    sentinels = ("sentinel1", "sentinel2", "sentinel3")
    p = compose(["--profile", "sentinel", "config", "--services"])
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.split()) == sorted(("redis", "nginx", "prometheus", "grafana") + NODES +
                                              SENTINEL_PROFILE), p.stdout
    url = "redis+sentinel://sentinel1:26379,sentinel2:26379,sentinel3:26379/herald"
    env = dict(ENV, HERALD_REDIS_URL=url)
    c = parsed(env=env)
    for n in NODES:
        assert c["services"][n]["environment"]["HERALD_REDIS_URL"] == url
    assert parsed()["services"][NODES[0]]["environment"]["HERALD_REDIS_URL"] == \
        "redis://redis:6379/0"
    svc = c["services"]
    assert svc["redis-replica"]["command"][1:4] == ["--replicaof", "redis", "6379"]
    for name in sentinels + ("redis-replica",):
        assert svc[name]["profiles"] == ["sentinel"], name
    for name in sentinels:
        script = svc[name]["command"][-1]
        assert "sentinel monitor herald redis 6379 2" in script and "--sentinel" in script, script


def test_stack_shape():
    check_stack(parsed())


def test_port_from_environment():
    env = dict(ENV, HERALD_PORT="18080")
    check_stack(parsed(env=env), env=env, port=18080)


def test_secrets_required():
    for var in ("HERALD_JWT_SECRET", "HERALD_API_KEY"):
        env = {k: v for k, v in ENV.items() if k != var}
        p = compose(["config", "-q"], env=env)
        assert p.returncode != 0, "compose accepted a stack without %s" % var
        assert var in p.stderr, "the error does not name %s: %s" % (var, p.stderr)


def test_nginx_config_syntax():
    """compose's nginx.conf + herald.conf pass `nginx -t` (Debian's nginx)."""
    d = tempfile.mkdtemp(prefix="herald-nginx-t-")
    try:
        conf = nginx_test_config(d)
        p = subprocess.run([NGINX_BIN, "-t", "-p", d + "/", "-c", conf, "-e", d + "/error.log"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, "nginx -t: %s%s" % (p.stdout, p.stderr)
        assert "syntax is ok" in p.stderr, p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_broken_files_are_caught():
    # not valid for the compose schema (a typo'd key)
    expect_check_failure(lambda t: t.replace("    environment:\n      <<: *herald-env\n"
                                             "      HERALD_NODE_ID: herald2",
                                             "    enviroment:\n      <<: *herald-env\n"
                                             "      HERALD_NODE_ID: herald2"),
                         "a misspelt key")
    # not YAML
    expect_check_failure(lambda t: t.replace("services:\n", "services:\n  - [\n", 1), "broken YAML")
    # valid compose, wrong stack
    expect_check_failure(lambda t: t[:t.index("  nginx:\n")] + t[t.index("\nvolumes:"):],
                         "no nginx service")
    expect_check_failure(lambda t: t.replace("HERALD_NODE_ID: herald2", "HERALD_NODE_ID: herald1"),
                         "two nodes with one node id")
    expect_check_failure(lambda t: t.replace("--appendonly\", \"yes", "--appendonly\", \"no"),
                         "no append-only file")
    expect_check_failure(lambda t: t.replace("redis://redis:6379/0", "redis://localhost:6379/0"),
                         "nodes pointed away from the redis service")
    expect_check_failure(lambda t: t.replace("condition: service_healthy", "condition: service_started"),
                         "nodes that do not wait for a healthy Redis")
    expect_check_failure(lambda t: t.replace("./deploy/nginx/herald.conf", "./deploy/nginx/other.conf"),
                         "nginx without deploy/nginx/herald.conf")
    expect_check_failure(lambda t: t[:t.index("  grafana:\n")] + t[t.index("\nvolumes:"):],
                         "no grafana service")
    expect_check_failure(lambda t: t.replace("./deploy/prometheus/prometheus.yml:", "./prometheus.yml:"),
                         "prometheus without deploy/prometheus/prometheus.yml")
    expect_check_failure(lambda t: t.replace("herald.json:/etc/grafana/dashboards/herald.json",
                                             "herald.json:/var/lib/grafana/herald.json"),
                         "the dashboard mounted where the provider does not look")
    expect_check_failure(lambda t: t.replace('"127.0.0.1:${GRAFANA_PORT:-3000}:3000"', '"${GRAFANA_PORT:-3000}:3000"'),
                         "grafana published on every interface")


if __name__ == "__main__":
    run_tests(globals(), per_test_timeout=120)
