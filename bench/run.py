"""`make bench`: the project's benchmarks, each reported next to its target or baseline.

Run with ``--only NAME`` to pick one. Results are printed, then one summary table of the
headline numbers; both are written to bench/results/ (latest.json, summary.txt).
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

from bench import audio, longrun, rpc, streams, summary, voice, webhooks
from voicecall.dsl import templates
from voicecall.dsl import validate as validate_mod
from voicecall.dsl.catalog import Catalog, bundled_dir
from voicecall.dsl.validate import find_flow_files, validate_paths, validate_text

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
    files = find_flow_files([bundled_dir()])
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


def _per_call(fn: Callable[[], object], number: int, rounds: int = 7) -> float:
    """Median over rounds of the mean time of one call, in microseconds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def bench_compiler(repeat: int) -> dict[str, Any]:
    from voicecall.compiler import base as compiler_base
    from voicecall.compiler import render as compiler_render

    flows = {e.name: e.flow for e in Catalog()}
    compile_ms: dict[str, dict[str, float]] = {}
    for provider in ("twilio", "plivo", "telnyx"):
        compiler_base.get_backend(provider)  # import the SDK outside the timing
        for name, flow in flows.items():
            samples = []
            for _ in range(max(5, repeat // 5)):
                compiler_base._cache.clear()
                compiler_render._compiled.cache_clear()
                start = time.perf_counter()
                compiler_base.compile_flow(flow, provider, flows)
                samples.append((time.perf_counter() - start) * 1000)
            compile_ms.setdefault(provider, {})[name] = statistics.median(samples)
    values = {"patient": "Ann Example", "when": "tomorrow at 3 PM"}
    system = {
        "callback_url": "https://voice.example.com/voice/webhook?call=c1&block=greet&step=0",
        "client_state": "eyJjIjoiYzEiLCJiIjoiZ3JlZXQiLCJzIjowfQ==",
        "command_id": "c1:greet:0:0",
    }
    render_us: dict[str, float] = {}
    for provider in ("twilio", "plivo", "telnyx"):
        compiled = compiler_base.compile_flow(flows["appointment-reminder"], provider, flows)
        render_us[provider] = _per_call(partial(_render, compiled.block("greet"), values, system),
                                        5000)  # fmt: skip
    sdk_us = {
        "twilio": _per_call(lambda: _twilio_sdk_greet(values, system), 2000),
        "plivo": _per_call(lambda: _plivo_sdk_greet(values, system), 2000),
    }
    medians = {p: statistics.median(v.values()) for p, v in compile_ms.items()}
    return {"compile_ms": compile_ms, "compile_median_ms": medians, "render_block_us": render_us,
            "sdk_build_us": sdk_us, "target_render_us": 50.0}  # fmt: skip


def _render(block: Any, values: dict[str, str], system: dict[str, str]) -> object:
    """What the webhook path does for one block: fill the XML, or every command body."""
    if block.xml is not None:
        return block.xml.render(values, system)
    return [c.render(values, system) for c in block.commands]


def _twilio_sdk_greet(values: dict[str, str], system: dict[str, str]) -> str:
    """The greet block of appointment-reminder, built with Twilio's SDK during the call."""
    from twilio.twiml.voice_response import VoiceResponse

    r = VoiceResponse()
    text = f"Hello {values['patient']}, this is a reminder of your appointment {values['when']}."
    r.say(text, voice="Polly.Joanna", language="en-US")
    g = r.gather(input="speech dtmf", action=system["callback_url"], method="POST", timeout=6,
                 speech_timeout="auto", num_digits=1, hints="yes,no", language="en-US",
                 action_on_empty_result=True)  # fmt: skip
    g.say("Can you make it? Say yes or no, or press 1 for yes or 2 for no.",
          voice="Polly.Joanna", language="en-US")  # fmt: skip
    r.redirect(system["callback_url"], method="POST")
    return str(r)


def _plivo_sdk_greet(values: dict[str, str], system: dict[str, str]) -> str:
    from plivo import plivoxml

    r = plivoxml.ResponseElement()
    text = f"Hello {values['patient']}, this is a reminder of your appointment {values['when']}."
    r.add_speak(text, voice="Polly.Joanna", language="en-US")
    g = plivoxml.GetInputElement(action=system["callback_url"], method="POST",
                                 input_type="speech dtmf", execution_timeout=6, num_digits=1,
                                 hints="yes,no", language="en-US", redirect=True)  # fmt: skip
    g.add_speak("Can you make it? Say yes or no, or press 1 for yes or 2 for no.",
                voice="Polly.Joanna", language="en-US")  # fmt: skip
    r.add(g)
    r.add_redirect(system["callback_url"], method="POST")
    return str(r.to_string(pretty=False))


def report_compiler(r: dict[str, Any]) -> None:
    print("compiler: compile a bundled flow, cold caches (median ms)")
    for provider, per_flow in r["compile_ms"].items():
        cells = "  ".join(f"{n} {ms:.2f}" for n, ms in per_flow.items())
        print(f"  {provider:<7} median {r['compile_median_ms'][provider]:6.2f} ms   ({cells})")
    print("webhook path: render the greet block of appointment-reminder with call values")
    for provider, us in r["render_block_us"].items():
        sdk = r["sdk_build_us"].get(provider)
        versus = (
            f"   SDK builder at run time {sdk:6.1f} us  ({sdk / us:4.1f}x slower)" if sdk else ""
        )
        print(f"  {provider:<7} {us:6.1f} us (target < {r['target_render_us']:.0f} us){versus}")


BENCHES: dict[str, tuple[Callable[[int], dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
    "dsl": (bench_dsl, report_dsl),
    "compiler": (bench_compiler, report_compiler),
    "webhooks": (webhooks.run, webhooks.report),
    "longrun": (longrun.run, longrun.report),
    "rpc": (rpc.run, rpc.report),
    "audio": (audio.run, audio.report),
    "streams": (streams.run, streams.report),
    "voice": (voice.run, voice.report),
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
    table = summary.table(results)
    print()
    print(table, end="")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2), "utf-8")
    (RESULTS / "summary.txt").write_text(table, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
