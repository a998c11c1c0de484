"""`make bench`'s summary table: one row per headline of the sections run, columns aligned."""

from __future__ import annotations

from typing import Any

from bench import summary

DSL = {
    "load_check_one_flow_median_ms": 1.2,
    "validate_200_flows_in_process_s": 0.3,
    "validate_200_flows_cli_s": 2.5,
    "targets": {"one_flow_ms": 5.0, "200_flows_s": 2.0},
}
WEBHOOKS: dict[str, Any] = {
    "median": {
        "runtime": {"rps": 5000.0, "per_cpu_s": 5200.0},
        "bare": {"rps": 25000.0, "per_cpu_s": 26000.0},
    },
    "ratio": 0.2,
    "ratio_per_cpu_s": 0.2,
    "target_ratio": 0.5,
    "persisted_exactly_once": True,
    "stores": None,
}


def test_only_the_sections_run_have_rows() -> None:
    whats = [row.what for row in summary.rows({"python": "3.11", "dsl": DSL})]
    assert whats == [
        "validate one flow (median, cold)",
        "validate 200 flows (in process)",
        "validate 200 flows (CLI, with start-up)",
    ]


def test_a_missed_target_says_no_and_the_ratio_is_measured_over_baseline() -> None:
    (throughput, per_cpu, once) = summary.rows({"webhooks": WEBHOOKS})
    assert throughput.cells() == (
        "webhooks/s vs bare aiohttp (same core)",
        "5,000 req/s",
        "bare 25,000 req/s; target >= 0.5x",
        "0.20x",
        "NO",
    )
    assert per_cpu.cells()[1:] == ("5,200 req", "bare 26,000 req", "0.20x", "")
    assert once.cells()[-1] == "yes"


def test_no_redis_row_without_a_redis_store_and_one_with_it() -> None:
    assert not any("Redis" in r.what for r in summary.rows({"webhooks": WEBHOOKS}))
    stores = {
        "redis": {"us_per_webhook": 300.0, "redis_us": 40.0, "persisted_exactly_once": True},
        "sqlite": {"us_per_webhook": 200.0},
    }
    row = summary.rows({"webhooks": WEBHOOKS | {"stores": stores}})[-1]
    assert row.cells() == (
        "Redis vs SQLite per-webhook cost (CPU)",
        "300 us + 40 in Redis",
        "SQLite 200 us",
        "1.70x",
        "",
    )


def test_the_columns_line_up() -> None:
    lines = summary.table({"dsl": DSL, "webhooks": WEBHOOKS}).splitlines()
    header, rule, *body = lines[1:]
    starts = [i for i, c in enumerate(rule) if c == "-" and (i == 0 or rule[i - 1] == " ")]
    assert len(starts) == len(summary.HEADER)
    for line in (header, *body):
        padded = line.ljust(len(rule))
        assert all(padded[s - 2 : s] == "  " for s in starts[1:])  # nothing spills over
    ratios = [line.ljust(len(rule))[starts[3] : starts[4] - 2] for line in body]
    assert all(r.endswith("x") or not r.strip() for r in ratios)  # numbers to the right
    assert "0.24x" in ratios


def test_the_original_is_a_row_measured_or_not_installed() -> None:
    missing = {"status": "not installed", "install": "npm install ...", "target_ratio": 1.5}
    row = summary.rows({"webhooks": WEBHOOKS | {"original": missing}})[3]
    assert row.cells()[:2] == ("webhooks/s vs the original (openclaw)", "not installed")
    assert row.cells()[-1] == ""
    measured = {"status": "measured", "rps": 4000.0, "ratio": 1.25, "target_ratio": 1.5}
    row = summary.rows({"webhooks": WEBHOOKS | {"original": measured}})[3]
    assert row.cells()[1:] == ("5,000 req/s", "original 4,000 req/s; target >= 1.5x", "1.25x", "NO")
