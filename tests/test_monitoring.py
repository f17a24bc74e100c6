"""The alert rules (deploy/monitoring/alerts.yml) against the runbook and the series the code
serves, and the JSON log format of logging.yml. Fast: no stack (tests/test_metrics.py has it)."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

ALERTS = ROOT / "deploy" / "monitoring" / "alerts.yml"
RUNBOOK = ROOT / "docs" / "operations.md"
METRIC_SOURCES = [ROOT / "rasa_server" / "metrics.py", ROOT / "actions" / "metrics.py"]
DURATION = re.compile(r"^\d+[smh]$")


def rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert groups and all(group["rules"] for group in groups)
    return [rule for group in groups for rule in group["rules"]]


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def served_series() -> dict[str, str]:
    """Metric name -> type, as the two metrics modules define them."""
    found = {}
    for path in METRIC_SOURCES:
        for kind, name in re.findall(r'\b(Counter|Gauge|Histogram)\(\s*"(asisten_\w+)"', path.read_text()):
            found[name] = kind
    return found


def test_every_alert_has_expr_duration_severity_and_a_runbook_section_that_exists():
    anchors = {slug(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    names = []
    for rule in rules():
        names.append(rule["alert"])
        assert rule["expr"].strip(), rule["alert"]
        assert DURATION.match(str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/operations.md" and anchor in anchors, rule["alert"]
        assert anchor == rule["alert"].lower(), "each alert has a section of its own"
    assert len(names) == len(set(names)) >= 10


def test_alerts_use_only_series_the_code_serves():
    series = served_series()
    suffixes = {"Counter": ("",), "Gauge": ("",), "Histogram": ("_bucket", "_count", "_sum")}
    known = {name + suffix for name, kind in series.items() for suffix in suffixes[kind]}
    used = {name for rule in rules() for name in re.findall(r"\basisten_\w+", rule["expr"])}
    assert used and used <= known, used - known
    # The SLO's threshold is a bucket the histogram has.
    assert 'le="1.0"' in ALERTS.read_text() and "1.0" in (ROOT / "rasa_server" / "metrics.py").read_text()


def test_the_runbook_lists_every_series():
    metrics_section = RUNBOOK.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in served_series() if f"`{name}`" not in metrics_section]
    assert len(served_series()) >= 13 and not missing, missing


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (structure checked above)")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def json_logger(monkeypatch, stream: io.StringIO) -> logging.Logger:
    """logging.yml as the processes apply it, with LOG_FORMAT=json, on a logger of its own."""
    monkeypatch.setenv("LOG_FORMAT", "json")
    config = yaml.safe_load((ROOT / "logging.yml").read_text())
    config["handlers"]["console"]["stream"] = stream
    config["loggers"] = {"json-test": {**config.pop("root"), "propagate": False}}
    logging.config.dictConfig(config)
    return logging.getLogger("json-test")


def test_json_lines_are_masked_and_carry_the_request_id(monkeypatch):
    from backend.events import REQUEST_ID

    stream = io.StringIO()
    logger = json_logger(monkeypatch, stream)
    token = REQUEST_ID.set("0123456789abcdef")
    try:
        logger.info("kode %s untuk %s, NIK %s", "482913", "+62 812-3456-7001", "3174011205800001")
        try:
            raise ValueError("bad NIK 3174011205800001")
        except ValueError:
            logger.exception("failed for 0812 3456 7002")
    finally:
        REQUEST_ID.reset(token)
    logger.warning("outside a turn")
    first, second, third = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert set(first) == {"time", "level", "logger", "message", "request_id"}
    assert first["level"] == "INFO" and first["logger"] == "json-test" and first["time"].endswith("+00:00")
    assert first["request_id"] == second["request_id"] == "0123456789abcdef" and third["request_id"] == ""
    assert first["message"] == "kode ****** untuk 0812****7001, NIK 3174********0001"
    text = stream.getvalue()
    for secret in ("482913", "3456-7001", "3456 7002", "3174011205800001"):
        assert secret not in text
    assert "ValueError" in second["exception"] and "3174********0001" in second["exception"]


def test_an_unknown_log_format_is_refused(monkeypatch):
    from backend.logformat import log_format

    assert log_format({}) == "text" and log_format({"LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(ValueError, match="text or json"):
        log_format({"LOG_FORMAT": "xml"})
