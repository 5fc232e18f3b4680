"""deploy/: the docker-compose stack, Prometheus config and alert rules, Grafana dashboard.

Nothing here can run the stack (no Docker daemon on CI machines), so each artefact is checked
by the tool that would read it: ``docker-compose config`` (Debian's compose v1, offline),
``promtool check``/``promtool test rules``, and the hub's own code for names (settings, API
roles, metric definitions). ``scripts/ensure-deploy-tools.sh`` installs the tools if missing.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from lothub.settings import Settings
from tests.conftest import ROOT
from trace_api.auth import AccessControl, Permission

DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    """docker-compose and promtool, installed by the script ``make test`` runs."""
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-deploy-tools.sh")], check=True)


@pytest.fixture
def deployed(tmp_path: Path) -> Path:
    """A copy of deploy/ after ``init-secrets.sh``, as an operator would have it."""
    target = tmp_path / "deploy"
    shutil.copytree(DEPLOY, target)
    (tmp_path / "lothub").mkdir()
    shutil.copy(ROOT / "lothub" / "sites.demo.toml", tmp_path / "lothub")
    subprocess.run([str(target / "init-secrets.sh")], check=True, capture_output=True)
    return target


def compose(deploy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml <args>`` in ``deploy`` (reads its .env).

    Only PATH is passed on: a variable of the caller's environment would override .env.
    """
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", *args],
        cwd=deploy,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(deploy: Path) -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, variables filled in)."""
    result = compose(deploy, "config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mount_target(volume: str | dict[str, str]) -> str:
    """Where a volume of a resolved compose file is mounted in the container."""
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def mount_source(volume: str | dict[str, str]) -> str:
    """What a volume of a resolved compose file mounts (host path or volume name)."""
    return volume["source"] if isinstance(volume, dict) else volume.split(":")[0]


# --------------------------------------------------------------------------- docker-compose


def test_compose_file_is_valid_once_secrets_exist(deployed: Path) -> None:
    result = compose(deployed, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_passwords(deployed: Path) -> None:
    (deployed / ".env").write_text("")
    result = compose(deployed, "config", "-q")
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "KAFKA_CLUSTER_ID" in result.stderr


def test_env_example_names_every_required_variable(deployed: Path) -> None:
    shutil.copy(deployed / ".env.example", deployed / ".env")
    result = compose(deployed, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_env_example_holds_placeholders_only() -> None:
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "CHANGE_ME" in line.split("=", 1)[1], line


def test_runs_kafka_postgres_hub_workers_prometheus_grafana(deployed: Path) -> None:
    services = resolved(deployed)["services"]
    assert set(services) == {"kafka", "postgres", "hub", "worker", "prometheus", "grafana"}
    assert services["hub"]["command"] == ["up"]
    assert services["worker"]["command"] == ["worker"]
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split("//", 1)[1]
    postgres = services["postgres"]["environment"]
    for name in ("hub", "worker"):
        env = services[name]["environment"]
        settings = Settings(**{k[len("LOTHUB_") :].lower(): v for k, v in env.items()
                               if k.startswith("LOTHUB_")})  # fmt: skip
        # the external broker, so `lothub up` starts no embedded one
        assert settings.kafka_bootstrap == advertised
        assert settings.store_url.startswith("postgresql+psycopg://")
        assert f"{postgres['POSTGRES_USER']}@postgres:5432/{postgres['POSTGRES_DB']}" in (
            settings.store_url
        )
        assert env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
        assert settings.worker_metrics_port is not None
        # every file the hub reads is mounted where the settings say
        files = [settings.site_config] + ([settings.api_keys_file] if name == "hub" else [])
        mounted = {mount_target(v): mount_source(v) for v in services[name]["volumes"]}
        for path in files:
            assert path is not None
            assert Path(mounted[str(path)]).is_file(), path
    assert services["hub"]["environment"]["LOTHUB_API_KEYS_FILE"]  # never local mode


def test_every_lothub_variable_is_a_setting(deployed: Path) -> None:
    """A misspelt LOTHUB_* variable is silently ignored by the hub: catch it here."""
    fields = {f"LOTHUB_{name.upper()}" for name in Settings.model_fields}
    for name in ("hub", "worker"):
        env = resolved(deployed)["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("LOTHUB_")} - fields
        assert not unknown, f"{name}: {unknown} are not hub settings"


def test_prometheus_key_from_init_secrets_may_read_metrics(deployed: Path) -> None:
    key = (deployed / "secrets" / "prometheus-api-key").read_text().strip()
    access = AccessControl.load(deployed / "secrets" / "api-keys.toml")
    who = access.authenticate({"authorization": f"Bearer {key}"})
    assert who is not None
    assert who.can(Permission.OPERATE)  # what /metrics asks for
    assert access.authenticate({"authorization": "Bearer not-the-key"}) is None


def test_init_secrets_never_overwrites(deployed: Path) -> None:
    before = {p: p.read_bytes() for p in deployed.rglob("*") if p.is_file()}
    subprocess.run([str(deployed / "init-secrets.sh")], check=True, capture_output=True)
    after = {p: p.read_bytes() for p in deployed.rglob("*") if p.is_file()}
    assert after == before


def test_generated_secrets_are_ignored_by_git(deployed: Path) -> None:
    made = sorted(
        str(p.relative_to(deployed.parent))
        for p in deployed.rglob("*")
        if p.is_file() and not (DEPLOY / p.relative_to(deployed)).exists()
    )
    assert made  # .env, hub.env, secrets/..., config/sites.toml
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *made],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(ignored) == made


def test_image_context_holds_every_package_and_no_secret() -> None:
    """The Dockerfile copies the context .dockerignore allows: every installed package."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "**"  # everything excluded unless allowed
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert packages <= allowed
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= allowed
    assert not {a for a in allowed if a.startswith("deploy")}


# --------------------------------------------------------------------------- metrics of the hub

#: prometheus_client constructors, and the suffixes each adds to the exposed sample names
_METRIC_KINDS: dict[str, tuple[str, ...]] = {
    "Counter": ("_total", "_created"),
    "CounterMetricFamily": ("_total",),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count"),
    "Summary": ("_sum", "_count", "_created", ""),
    "SummaryMetricFamily": ("_sum", "_count", ""),
    "Info": ("_info",),
}
#: labels Prometheus adds to every scraped series; a hub label of the same name becomes exported_*
TARGET_LABELS = {"job", "instance"}


def _strings(node: ast.expr | None, consts: dict[str, list[str]]) -> list[str]:
    """Label names written as a literal list/tuple, a module constant, or a mix with *starred."""
    if node is None:
        return []
    if isinstance(node, ast.Name):
        return consts.get(node.id, [])
    if isinstance(node, ast.List | ast.Tuple):
        out: list[str] = []
        for element in node.elts:
            if isinstance(element, ast.Starred):
                out += _strings(element.value, consts)
            elif isinstance(element, ast.Constant) and isinstance(element.value, str):
                out.append(element.value)
        return out
    return []


def package_sources() -> list[Path]:
    """The Python files of the hub's packages."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return sorted(
        p for pkg in pyproject["tool"]["mypy"]["packages"] for p in (ROOT / pkg).rglob("*.py")
    )


@dataclass
class MetricDefinition:
    """A call constructing a ``lothub_*`` metric, and the module constants its labels may name."""

    module: str
    kind: str
    call: ast.Call
    constants: dict[str, list[str]]


def metric_sources() -> list[MetricDefinition]:
    """Every call constructing a ``lothub_*`` metric in the hub's packages."""
    found: list[MetricDefinition] = []
    for path in package_sources():
        tree = ast.parse(path.read_text(), str(path))
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        constants = {
            target.id: _strings(node.value, {})
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            first = node.args[0]
            if (kind in _METRIC_KINDS and isinstance(first, ast.Constant)
                    and str(first.value).startswith("lothub_")):  # fmt: skip
                found.append(MetricDefinition(module, kind, node, constants))
    return found


def hub_metrics() -> dict[str, set[str]]:
    """Every sample name the hub can expose, with its labels, read from the metric definitions
    in the packages' source (so a renamed metric or label breaks the rules' and dashboard's
    tests, not a dashboard in production)."""
    metrics: dict[str, set[str]] = {}
    for d in metric_sources():
        name = str(d.call.args[0].value)  # type: ignore[attr-defined]
        keywords = {k.arg: k.value for k in d.call.keywords}
        positional = d.call.args[2] if len(d.call.args) > 2 else None
        labels = set(_strings(keywords.get("labelnames", keywords.get("labels", positional)),
                              d.constants))  # fmt: skip
        base = name.removesuffix("_total") if "Counter" in d.kind else name
        for suffix in _METRIC_KINDS[d.kind]:
            if suffix == "_bucket":
                metrics[base + suffix] = labels | {"le"}
            elif suffix == "" and "Summary" in d.kind:
                metrics[base + suffix] = labels | {"quantile"}
            else:
                metrics[base + suffix] = labels
    return metrics


def hub_strings() -> set[str]:
    """Every string literal of the packages: where label values like ">30d" are defined."""
    return {
        n.value
        for path in package_sources()
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_the_metric_scan_sees_what_the_code_registers(sqlite_url: str) -> None:
    """The scan must agree with the metric objects the hub builds, or checks on it prove nothing."""
    from prometheus_client.metrics import MetricWrapperBase

    from genealogy.store import GenealogyStore
    from trace_api.kpi_metrics import KpiCollector

    metrics = hub_metrics()
    built: dict[str, set[str]] = {}
    for module_name in sorted({d.module for d in metric_sources()}):
        for value in vars(importlib.import_module(module_name)).values():
            if isinstance(value, MetricWrapperBase):
                (family,) = value.describe()
                suffix = "_total" if family.type == "counter" else ""
                built[family.name + suffix] = set(value._labelnames)  # no public accessor
    store = GenealogyStore.connect(sqlite_url)
    try:
        store.migrate()
        for family in KpiCollector(store).collect():
            built[family.name] = set(family._labelnames)
    finally:
        store.close()
    assert "lothub_connector_errors_total" in built
    assert "lothub_kpi_blocked_stock_quantity" in built
    for name, labels in built.items():
        assert metrics.get(name) == labels, name


@dataclass
class Selector:
    """A series selector of a PromQL expression, and the labels it is grouped by."""

    name: str | None
    matchers: dict[str, tuple[str, str]]  # label -> (operator, value)
    grouped_by: set[str]


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of ``expr`` (raises ValueError if it does not parse)."""
    found: list[Selector] = []

    def visit(node: Any, grouping: set[str]) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            modifier = node.modifier
            by = modifier is not None and modifier.type == promql_parser.AggModifierType.By
            grouping = set(modifier.labels) if by else grouping
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: (str(m.op), m.value) for m in node.matchers.matchers}
            found.append(Selector(node.name, matchers, grouping))
            return
        for attr in ("lhs", "rhs", "expr", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None:
                visit(child, grouping)
        for child in getattr(node, "args", None) or []:
            visit(child, grouping)

    visit(promql_parser.parse(expr), set())
    return found


def unknown_names(expr: str, metrics: dict[str, set[str]], strings: set[str]) -> list[str]:
    """What ``expr`` asks of the hub's metrics that the hub does not define."""
    problems: list[str] = []
    selected = [s for s in selectors(expr) if s.name and s.name.startswith("lothub_")]
    for sel in selected:
        assert sel.name is not None
        if sel.name not in metrics:
            problems.append(f"metric {sel.name}")
            continue
        # the hub's own `job` label is stored as check (the scrape job keeps `job`)
        labels = metrics[sel.name] - TARGET_LABELS | {
            f"exported_{t}" for t in metrics[sel.name] & TARGET_LABELS
        }
        for label, (op, value) in sel.matchers.items():
            if label not in labels | TARGET_LABELS | {"__name__"}:
                problems.append(f"label {label} of {sel.name}")
            elif "Equal" in op and value and label not in TARGET_LABELS and value not in strings:
                problems.append(f"value {label}={value!r} of {sel.name}")
    names = {s.name for s in selected}
    grouping = set().union(*(s.grouped_by for s in selected)) if selected else set()
    available = set().union(*(metrics.get(n or "", set()) for n in names)) | TARGET_LABELS
    available |= {f"exported_{t}" for t in TARGET_LABELS}
    problems += [f"group-by label {g}" for g in grouping - available]
    return problems


def test_unknown_names_are_caught() -> None:
    """The check itself: a typo in a metric, label or label value is reported."""
    metrics, strings = hub_metrics(), hub_strings()
    good = 'sum by (site) (lothub_kpi_blocked_stock_quantity{age_band=">30d"})'
    assert unknown_names(good, metrics, strings) == []
    assert unknown_names("lothub_kpi_blocked_stock_qty", metrics, strings)
    assert unknown_names('lothub_kpi_blocked_stock_quantity{band=">30d"}', metrics, strings)
    assert unknown_names('lothub_kpi_blocked_stock_quantity{age_band="> 30d"}', metrics, strings)
    assert unknown_names("sum by (lot) (lothub_kpi_blocked_stock_quantity)", metrics, strings)
    with pytest.raises(ValueError, match=r"."):
        selectors("sum(lothub_kpi_shipped_lots")


# --------------------------------------------------------------------------- Prometheus

PROMETHEUS = DEPLOY / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (on PATH, or where scripts/ensure-deploy-tools.sh put it)."""
    binary = shutil.which("promtool") or str(ROOT / "var" / "tools" / "promtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/prometheus/rules."""
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_prometheus_config_is_valid(deployed: Path) -> None:
    # in the copy: init-secrets.sh made the key file the config names
    result = promtool("check", "config", str(deployed / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout  # the rule files were loaded and checked too


def test_prometheus_scrapes_the_compose_services(deployed: Path) -> None:
    """Targets, ports and the key file agree with docker-compose.yml."""
    services = resolved(deployed)["services"]
    config = yaml.safe_load((deployed / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    hub_env = services["hub"]["environment"]
    api_port, worker_port = hub_env["LOTHUB_API_PORT"], hub_env["LOTHUB_WORKER_METRICS_PORT"]

    api = jobs["lothub-api"]
    assert api["static_configs"][0]["targets"] == [f"hub:{api_port}"]
    assert api["metrics_path"] == "/metrics"
    # the key file, resolved from the config's folder inside the container, is mounted there
    command = services["prometheus"]["command"]
    config_file = next(c for c in command if c.startswith("--config.file=")).split("=", 1)[1]
    key_in_container = Path(config_file).parent / api["authorization"]["credentials_file"]
    mounts = {mount_target(v): mount_source(v) for v in services["prometheus"]["volumes"]}
    assert Path(mounts[str(Path(*_normalized(key_in_container)))]) == (
        deployed / "secrets" / "prometheus-api-key"
    )

    worker = jobs["lothub-worker"]
    assert worker["static_configs"][0]["targets"] == [f"hub:{worker_port}"]  # `lothub up`'s own
    (dns,) = worker["dns_sd_configs"]
    assert "worker" in services
    assert dns["names"] == ["worker"]
    assert str(dns["port"]) == services["worker"]["environment"]["LOTHUB_WORKER_METRICS_PORT"]


def _normalized(path: Path) -> tuple[str, ...]:
    """``path`` with ``..`` resolved lexically (the container's file system is not here)."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            parts.pop()
        else:
            parts.append(part)
    return tuple(parts)


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_a_unit_test_and_has_a_runbook() -> None:
    tested_firing: set[str] = set()
    tested_quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (tested_firing if check["exp_alerts"] else tested_quiet).add(check["alertname"])
    readme = (DEPLOY / "README.md").read_text()
    for rule in alert_rules():
        name = rule["alert"]
        assert name in tested_firing, f"{name}: no unit test shows it firing"
        assert rule["labels"]["severity"] in {"critical", "warning"}
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == name.lower()
        assert f"#### {name}" in readme, f"{name}: no runbook entry in deploy/README.md"
    # a near miss is a series next to the firing one that must not alert (exp_alerts lists
    # exactly the alerts expected), or a check where nothing may fire
    assert tested_quiet


def test_alert_rules_use_only_metrics_the_hub_defines() -> None:
    metrics, strings = hub_metrics(), hub_strings()
    for rule in alert_rules():
        assert unknown_names(rule["expr"], metrics, strings) == [], rule["alert"]


# --------------------------------------------------------------------------- Grafana

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
#: what Grafana substitutes before a query reaches Prometheus
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1d", "$__interval": "15s"}


def datasource_uids() -> set[str]:
    """Uids of the provisioned datasources."""
    return {
        ds["uid"]
        for path in (GRAFANA / "provisioning" / "datasources").glob("*.yml")
        for ds in yaml.safe_load(path.read_text())["datasources"]
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, also those inside collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL query, with the dashboard's and Grafana's variables filled in."""
    variables = dict(GRAFANA_VARIABLES)
    for var in dashboard["templating"]["list"]:
        variables[f"${var['name']}"] = var.get("allValue") or ".*"
    queries = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            # label_values(<selector>, <label>): the selector is PromQL
            definition = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = definition.removeprefix("label_values(").removesuffix(")")
            selector, label = inner.rsplit(",", 1)
            queries.append(f"sum by ({label.strip()}) ({selector})")
    out = []
    for query in queries:
        for name in sorted(variables, key=len, reverse=True):
            query = query.replace(name, variables[name])
        out.append(query)
    return out


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_a_valid_provisioned_dashboard(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["schemaVersion"] >= 36  # Grafana 9 and later
    assert dashboard["uid"]
    assert dashboard["title"]
    all_panels = panels(dashboard)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    uids = datasource_uids()
    boxes: list[tuple[int, int, int, int]] = []
    for panel in all_panels:
        pos = panel["gridPos"]
        assert min(pos["w"], pos["h"]) > 0
        assert 0 <= pos["x"] <= 24 - pos["w"], "the grid is 24 columns wide"
        for x, y, w, h in boxes:
            overlap = (
                pos["x"] < x + w
                and x < pos["x"] + pos["w"]
                and pos["y"] < y + h
                and y < pos["y"] + pos["h"]
            )
            assert not overlap, f"panel {panel['title']!r} overlaps another"
        boxes.append((pos["x"], pos["y"], pos["w"], pos["h"]))
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] in uids


def test_dashboards_are_where_the_provider_loads_them(deployed: Path) -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "lothub.yml").read_text())
    (provider,) = providers["providers"]
    mounts = {
        mount_target(v): mount_source(v)
        for v in resolved(deployed)["services"]["grafana"]["volumes"]
    }
    assert Path(mounts[provider["options"]["path"]]) == deployed / "grafana" / "dashboards"
    assert Path(mounts["/etc/grafana/provisioning"]) == deployed / "grafana" / "provisioning"
    home = Path(resolved(deployed)["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])  # fmt: skip
    assert (Path(mounts[str(home.parent)]) / home.name).is_file()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_parse_and_use_only_metrics_the_hub_defines(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    metrics, strings = hub_metrics(), hub_strings()
    queries = expressions(dashboard)
    used = set()
    for query in queries:
        assert unknown_names(query, metrics, strings) == [], query  # also: it parses
        used |= {s.name for s in selectors(query) if s.name}
    # the operations view the issue asks for: integration health, alerts, reconciliation, KPIs
    for family in ("lothub_connector_", "lothub_integrity_", "lothub_reconcile_", "lothub_kpi_"):
        assert any(name.startswith(family) for name in used), family
    kpis = {name for name in metrics if name.startswith("lothub_kpi_")}
    assert kpis <= used, f"KPIs without a panel: {kpis - used}"
