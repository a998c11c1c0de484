"""The one table at the end of `make bench`: each section's headline numbers, side by side.

One row per headline: what was measured, the number, what it is compared with (a baseline
measured in the same run, or a target), the ratio of the two, and whether the target is met.
A section that was not run (``--only``) has no rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HEADER = ("what", "measured", "baseline / target", "ratio", "ok?")


@dataclass(frozen=True, slots=True)
class Row:
    what: str
    measured: str
    versus: str = ""  # the baseline or target
    ratio: str = ""  # measured / baseline (or / target when there is no baseline)
    ok: bool | None = None  # None: nothing to meet

    def cells(self) -> tuple[str, ...]:
        ok = "" if self.ok is None else "yes" if self.ok else "NO"
        return (self.what, self.measured, self.versus, self.ratio, ok)


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _dsl(r: dict[str, Any]) -> list[Row]:
    one, many = r["load_check_one_flow_median_ms"], r["validate_200_flows_in_process_s"]
    one_t, many_t = r["targets"]["one_flow_ms"], r["targets"]["200_flows_s"]
    return [
        Row("validate one flow (median, cold)", f"{one:.2f} ms", f"target < {one_t:g} ms",
            _x(one / one_t), one < one_t),
        Row("validate 200 flows (in process)", f"{many:.2f} s", f"target < {many_t:g} s",
            _x(many / many_t), many < many_t),
        Row("validate 200 flows (CLI, with start-up)", f"{r['validate_200_flows_cli_s']:.2f} s"),
    ]  # fmt: skip


def _compiler(r: dict[str, Any]) -> list[Row]:
    medians = r["compile_median_ms"]
    slowest = max(medians, key=medians.get)
    rows = [Row(f"compile a flow (median, slowest provider: {slowest})",
                f"{medians[slowest]:.2f} ms")]  # fmt: skip
    target = r["target_render_us"]
    for provider, sdk in r["sdk_build_us"].items():
        us = r["render_block_us"][provider]
        rows.append(Row(f"render a block vs the SDK builder ({provider})", f"{us:.1f} us",
                        f"SDK {sdk:.1f} us; target < {target:g} us", _x(us / sdk),
                        us < target and us < sdk))  # fmt: skip
    return rows


def _webhooks(r: dict[str, Any]) -> list[Row]:
    runtime, bare = r["median"]["runtime"], r["median"]["bare"]
    target, once = r["target_ratio"], bool(r["persisted_exactly_once"])
    rows = [
        Row("webhooks/s vs bare aiohttp (same core)", f"{runtime['rps']:,.0f} req/s",
            f"bare {bare['rps']:,.0f} req/s; target >= {target:g}x", _x(r["ratio"]),
            r["ratio"] >= target),
        Row("  the same per server CPU-second (less noisy)", f"{runtime['per_cpu_s']:,.0f} req",
            f"bare {bare['per_cpu_s']:,.0f} req", _x(r["ratio_per_cpu_s"])),
        Row("webhook changes persisted exactly once", "yes" if once else "no", ok=once),
    ]  # fmt: skip
    original = r.get("original")
    if original is not None:
        goal = original["target_ratio"]
        if "ratio" in original:
            ratio = original["ratio"]
            rows.append(Row("webhooks/s vs the original (openclaw)", f"{runtime['rps']:,.0f} req/s",
                            f"original {original['rps']:,.0f} req/s; target >= {goal:g}x",
                            _x(ratio), ratio >= goal))  # fmt: skip
            if "per_cpu_s" in original:
                rows.append(Row("  the same per server CPU-second (less noisy)",
                                f"{runtime['per_cpu_s']:,.0f} req",
                                f"original {original['per_cpu_s']:,.0f} req",
                                _x(original["ratio_per_cpu_s"])))  # fmt: skip
        else:
            rows.append(Row("webhooks/s vs the original (openclaw)", original["status"],
                            f"target >= {goal:g}x (install: see above)"))  # fmt: skip
    stores = r.get("stores")  # only once the runtime has a Redis store
    if stores is not None and "redis" not in stores:
        rows.append(Row("Redis vs SQLite per-webhook cost (CPU)", stores["status"]))
    elif stores is not None:
        redis, sqlite = stores["redis"], stores["sqlite"]
        both = redis["us_per_webhook"] + redis["redis_us"]
        rows.append(Row("Redis vs SQLite per-webhook cost (CPU)",
                        f"{redis['us_per_webhook']:.0f} us + {redis['redis_us']:.0f} in Redis",
                        f"SQLite {sqlite['us_per_webhook']:.0f} us",
                        _x(both / sqlite["us_per_webhook"]),
                        None if redis["persisted_exactly_once"] else False))  # fmt: skip
    return rows


def _rpc(r: dict[str, Any]) -> list[Row]:
    s = r["status_one"]
    return [Row(f"RPC round trip, one call's status ({r['live_calls']} live), p50 / p99",
                f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f} ms")]  # fmt: skip


def _streams(r: dict[str, Any]) -> list[Row]:
    s = r["settings"]
    n, target = r["streams_per_core"], s["target_streams"]
    return [Row(f"media streams per core (p99 < {s['target_p99_ms']:g} ms)", f"{n}",
                f"target >= {target}", _x(n / target), n >= target)]  # fmt: skip


def _longrun(r: dict[str, Any]) -> list[Row]:
    slope, target = r["rss_slope_kb_per_1000_calls"], r["target_kb_per_1000"]
    return [Row("RSS slope after warm-up", f"{slope:+.1f} KB / 1000 calls",
                f"target within +-{target:g} KB", _x(abs(slope) / target),
                abs(slope) <= target)]  # fmt: skip


def _audio(r: dict[str, Any]) -> list[Row]:
    onset = max(r["vad_onset_ms"].values())
    return [
        Row("calls one core carries (audio work only)", f"{r['calls_per_core_audio_only']:,.0f}"),
        Row("barge-in VAD onset (slowest level)", f"{onset} ms", "target < 100 ms",
            _x(onset / 100), onset < 100),
    ]  # fmt: skip


def _voice(r: dict[str, Any]) -> list[Row]:
    t = r["targets"]
    clear, turn = r["onset_to_clear_ms"]["p99"], r["turn_total_ms"]["p99"]
    return [
        Row("speech onset -> clear at the carrier, p99", f"{clear:.1f} ms",
            f"target < {t['clear_ms']:g} ms", _x(clear / t["clear_ms"]), clear < t["clear_ms"]),
        Row("a turn, the runtime's share, p99", f"{turn:.1f} ms",
            f"target < {t['turn_p99_ms']:g} ms", _x(turn / t["turn_p99_ms"]),
            turn < t["turn_p99_ms"]),
    ]  # fmt: skip


SECTIONS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "dsl": _dsl,
    "compiler": _compiler,
    "webhooks": _webhooks,
    "rpc": _rpc,
    "streams": _streams,
    "longrun": _longrun,
    "audio": _audio,
    "voice": _voice,
}


def rows(results: dict[str, Any]) -> list[Row]:
    """The headline rows of the sections in ``results``, in a fixed order."""
    return [
        row for name, make in SECTIONS.items() if name in results for row in make(results[name])
    ]


def table(results: dict[str, Any]) -> str:
    """The summary as aligned plain text (ratio: measured / baseline, or / target)."""
    lines = [HEADER, *(row.cells() for row in rows(results))]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    right = {1, 3}  # numbers

    def fmt(cells: tuple[str, ...]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])]
    return "\n".join(["summary (ratio = measured / baseline, or / target)", *body]) + "\n"
