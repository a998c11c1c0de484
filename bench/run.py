"""`make bench`: the project's benchmarks, each reported next to its target or baseline.

Run with ``--only NAME`` to pick one. Results are printed and written to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from voicecall.dsl import templates
from voicecall.dsl import validate as validate_mod
from voicecall.dsl.catalog import Catalog, bundled_dir
from voicecall.dsl.validate import validate_paths, validate_text

RESULTS = Path(__file__).parent / "results"


def clear_caches() -> None:
    """Every run starts cold: no parsed template or loaded file is reused."""
    templates.analyze_template.cache_clear()
    templates.analyze_expression.cache_clear()
    validate_mod._cache.clear()


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        clear_caches()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_dsl(repeat: int) -> dict[str, Any]:
    library = Catalog().infos()
    files = sorted(bundled_dir().rglob("*.yaml"))
    per_flow = {}
    for path in files:
        samples = timed(partial(validate_text, path.read_bytes(), path.name, library), repeat)
        per_flow[path.stem] = statistics.median(samples) * 1000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        texts = [p.read_text("utf-8") for p in files]
        for i in range(200):
            base = texts[i % len(texts)]
            name = base.split("\nname: ", 1)[1].split("\n", 1)[0]
            # Distinct names and contents, so no cache or duplicate check is short-circuited.
            text = base.replace(f"\nname: {name}\n", f"\nname: {name}-{i}\n") + f"# copy {i}\n"
            (folder / f"flow-{i:03}.yaml").write_text(text, "utf-8")
        in_process = timed(lambda: validate_paths([folder], library), max(3, repeat // 10))
        cli = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "voicecall.plugin.cli_main", "validate", tmp],
                           check=False, capture_output=True)  # fmt: skip
            cli.append(time.perf_counter() - start)
    return {
        "load_check_one_flow_ms": per_flow,
        "load_check_one_flow_median_ms": statistics.median(per_flow.values()),
        "validate_200_flows_in_process_s": statistics.median(in_process),
        "validate_200_flows_cli_s": statistics.median(cli),
        "targets": {"one_flow_ms": 5.0, "200_flows_s": 2.0},
    }


def report_dsl(r: dict[str, Any]) -> None:
    print("flow language: load + schema + every check, cold caches (median)")
    for name, ms in r["load_check_one_flow_ms"].items():
        print(f"  {name:<24} {ms:7.2f} ms")
    print(f"  median over bundled flows {r['load_check_one_flow_median_ms']:7.2f} ms"
          f"   (target < {r['targets']['one_flow_ms']} ms)")  # fmt: skip
    print(f"  validate 200 flows, in process  {r['validate_200_flows_in_process_s']:6.3f} s"
          f"   (target < {r['targets']['200_flows_s']} s)")  # fmt: skip
    print(
        f"  validate 200 flows, CLI process {r['validate_200_flows_cli_s']:6.3f} s"
        "   (includes interpreter start and imports)"
    )


BENCHES: dict[str, tuple[Callable[[int], dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
    "dsl": (bench_dsl, report_dsl),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    results: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    for name in args.only or sorted(BENCHES):
        run, report = BENCHES[name]
        print(f"[{name}] running…", file=sys.stderr, flush=True)
        results[name] = run(args.repeat)
        report(results[name])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
