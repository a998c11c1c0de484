"""What the call commands show people: the live view of `call --follow`, `tail`, and tables.

``call --follow`` subscribes to the Gateway's events *before* placing the call (so nothing is
missed), then shows a spinner while the phone rings and the transcript as it happens, until
the call ends. ``tail`` prints the recent calls from the store, then every call change and
transcript line the Gateway pushes; with no Gateway it polls the store. Scripts get one JSON
object per line (``--json``) instead.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table
from rich.text import Text

from voicecall.plugin.call_log import CallLog, jsonl_since, jsonl_tail
from voicecall.plugin.gateway import client as gw
from voicecall.runtime.state import TERMINAL

CALL, LINE = "voicecall.call", "voicecall.transcript"
RINGING = ("initiated", "ringing")


def console() -> Console:
    # Follows the terminal (or COLUMNS); click's NO_COLOR handling is mirrored by rich itself.
    return Console(highlight=False)


# Control characters, line breaks included: a caller's words stay on their line and cannot
# drive the terminal (an escape sequence in a transcript would otherwise reach it raw).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: Any) -> str:
    """Text from a call (what the caller said) with control characters shown as ``\\xNN``."""
    text = str(value if value is not None else "")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def esc(value: Any) -> str:
    """Text from a call, printable, shown as is: never as rich markup."""
    return escape(printable(value))


def clock(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def ended(payload: Mapping[str, Any]) -> bool:
    return payload.get("state") in TERMINAL or payload.get("endedAt") is not None


class JsonLines:
    """``--json``: one compact JSON object per line, flushed as it happens."""

    def start(self, call_id: str, params: Mapping[str, Any]) -> None:
        self._line({"callId": call_id})

    def event(self, event: gw.Event) -> None:
        self._line({"event": event.event, "payload": event.payload})

    def stop(self) -> None:
        pass

    @staticmethod
    def _line(obj: Any) -> None:
        click.echo(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


class LiveView:
    """People: a spinner while ringing, then each state change and transcript line."""

    def __init__(self, out: Console):
        self.out = out
        self.status: Status | None = None
        self.started_ms: Any = None

    def start(self, call_id: str, params: Mapping[str, Any]) -> None:
        to = params.get("to") or "the configured number"
        what = params.get("flow") or params.get("mode")
        self.out.print(f"[bold]Calling {esc(to)}[/bold] ({esc(what)})")
        self.out.print(f"  call {esc(call_id)}", soft_wrap=True)
        self.status = self.out.status(f"Ringing {to}…", spinner="dots")
        self.status.start()

    def event(self, event: gw.Event) -> None:
        payload = event.payload if isinstance(event.payload, Mapping) else {}
        if event.event == CALL:
            self._state(payload)
        elif event.event == LINE:
            self._spin_off()
            speaker = str(payload.get("speaker", ""))
            colour = "cyan" if speaker == "bot" else "green"
            # A grid, so that a long line wraps under its own text, not under the time.
            line = Table.grid(padding=(0, 1))
            line.add_column(width=1)
            line.add_column(style="dim", no_wrap=True)
            line.add_column(style=colour, width=4, no_wrap=True)
            line.add_column(overflow="fold")
            line.add_row("", clock(payload.get("at")), Text(printable(speaker)),
                         Text(printable(payload.get("text", ""))))  # fmt: skip
            self.out.print(line)

    def _state(self, payload: Mapping[str, Any]) -> None:
        state = str(payload.get("state", ""))
        self.started_ms = payload.get("startedAt", self.started_ms)
        if state in RINGING:
            if self.status is not None:
                self.status.update(f"{state.capitalize()}…")
            return
        self._spin_off()
        if ended(payload):
            took = ""
            end, begin = payload.get("endedAt"), self.started_ms
            if isinstance(end, int | float) and isinstance(begin, int | float):
                took = f" after {(end - begin) / 1000:.1f} s"
            reason = payload.get("endReason") or state
            self.out.print(f"[bold]Call ended: {esc(reason)}{took}[/bold]")
        elif state in ("answered", "active"):
            self.out.print(f"  [dim]{clock(payload.get('answeredAt'))}[/dim] [yellow]{esc(state)}"
                           "[/yellow]")  # fmt: skip

    def _spin_off(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def stop(self) -> None:
        self._spin_off()


async def place_and_follow(
    target: gw.Target, method: str, params: Mapping[str, Any], *, timeout_s: float,
    as_json: bool, shown: Mapping[str, Any] | None = None,
) -> int:  # fmt: skip
    """Places a call and shows it until it ends; returns the exit code.

    ``shown``: the params as people see them (the configured ``to`` filled in).
    """
    events = await gw.connect(target, method=method)  # first: no event can be missed
    view: JsonLines | LiveView = JsonLines() if as_json else LiveView(console())
    try:
        placed = await gw.call(target, method, params, timeout_s=timeout_s)
        call_id = str(placed.get("callId")) if isinstance(placed, Mapping) else ""
        view.start(call_id, shown or params)
        async for event in events.events():
            payload = event.payload if isinstance(event.payload, Mapping) else {}
            if event.event not in (CALL, LINE) or payload.get("callId") != call_id:
                continue
            view.event(event)
            if event.event == CALL and ended(payload):
                return 0
    finally:
        view.stop()
        await events.close()
    return 1  # events() ends only by raising; kept for the type checker


# --- tail -----------------------------------------------------------------------------------------


class TailPrinter:
    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.out = console()

    def __call__(self, name: str, payload: Mapping[str, Any]) -> None:
        if self.as_json:
            click.echo(json.dumps({"event": name, "payload": payload}, ensure_ascii=False,
                                  separators=(",", ":")))  # fmt: skip
            return
        short = esc(str(payload.get("callId", ""))[:8])
        if name == CALL:
            at = payload.get("endedAt") or payload.get("answeredAt") or payload.get("startedAt")
            reason = f" ({esc(payload['endReason'])})" if payload.get("endReason") else ""
            self.out.print(f"[dim]{clock(at)}[/dim] {short} [yellow]{esc(payload.get('state'))}"
                           f"[/yellow]{reason} {esc(payload.get('direction', ''))}")  # fmt: skip
        else:
            colour = "cyan" if payload.get("speaker") == "bot" else "green"
            who = f"[{colour}]{esc(payload.get('speaker'))}[/{colour}]"
            self.out.print(f"[dim]{clock(payload.get('at'))}[/dim] {short} {who}: "
                           f"{esc(payload.get('text'))}")  # fmt: skip


async def tail(
    target: gw.Target, log: CallLog, provider: str, *, since: int, poll_s: float,
    as_json: bool,
) -> None:  # fmt: skip
    """Recent calls from the store, then live events (or store changes) until interrupted."""
    from voicecall.plugin.service import status_view

    show = TailPrinter(as_json)
    events: gw.GatewayClient | None = None
    try:  # subscribed before the store is read: no change falls between the two
        events = await gw.connect(target, method="tail")
    except (gw.GatewayUnreachable, gw.CredentialsMissing) as exc:
        click.echo(f"note: {exc}; following the call store", err=True)
    for record in log.recent(since) if since else []:
        show(CALL, status_view(record, provider))
    mark = log.last_update()
    if events is not None:
        try:
            async for event in events.events():
                if event.event in (CALL, LINE) and isinstance(event.payload, Mapping):
                    show(event.event, event.payload)
        except gw.GatewayTransportError as exc:
            click.echo(f"note: {exc}; following the call store", err=True)
        finally:
            await events.close()
        mark = log.last_update()
    await poll_store(log, provider, mark, poll_s, show)


async def tail_jsonl(path: Path, *, since: int, poll_s: float) -> None:
    """The original plugin's calls.jsonl: the last lines, then each line appended."""
    lines, offset = jsonl_tail(path, since) if since else ([], jsonl_tail(path, 0)[1])
    while True:
        for line in lines:
            click.echo(line)
        await asyncio.sleep(poll_s)
        lines, offset = jsonl_since(path, offset)


async def poll_store(
    log: CallLog, provider: str, mark: float, poll_s: float, show: TailPrinter
) -> None:
    """Prints what changed in the store every ``poll_s`` (the original's file polling)."""
    from voicecall.plugin.service import status_view

    seen: dict[str, tuple[str, int]] = {}
    while True:
        records, mark = log.changed_since(mark)
        for record in records:
            state, lines = seen.get(record.call_id, ("", 0))
            if record.state != state:
                show(CALL, status_view(record, provider))
            for line in record.transcript[lines:]:
                show(LINE, {"callId": record.call_id, "speaker": line.speaker,
                            "text": line.text, "at": round(line.at * 1000)})  # fmt: skip
            seen[record.call_id] = (record.state, len(record.transcript))
        await asyncio.sleep(poll_s)


# --- tables ---------------------------------------------------------------------------------------


NARROW = 80  # below this a table of a call id and its state does not fit: lines per call


def status_table(calls: Sequence[Mapping[str, Any]]) -> None:
    out = console()
    columns = ["state", "direction", "provider", "started", "answered", "ended"]
    if out.width < 110:  # a call id is copied into the next command: never cut; others go
        columns = ["state", "started", "ended"]
    if out.width < NARROW:
        _status_lines(out, calls)
        return
    table = Table()
    table.add_column("call", no_wrap=True, min_width=36)
    for name in columns:  # a time (hh:mm:ss) is never cut either
        table.add_column(
            name, overflow="fold", no_wrap=name in TIMES, min_width=8 * (name in TIMES)
        )
    for call in calls:
        state = str(call.get("state", ""))
        if call.get("endReason") and call.get("endReason") != state:
            state += f" ({call['endReason']})"
        cells = {
            "state": state,
            "direction": str(call.get("direction", "")),
            "provider": str(call.get("provider", "")),
            "started": clock(call.get("startedAt")),
            "answered": clock(call.get("answeredAt")),
            "ended": clock(call.get("endedAt")),
        }
        table.add_row(Text(printable(call.get("callId", ""))),
                      *(Text(printable(cells[c])) for c in columns))  # fmt: skip
    out.print(table)


TIMES = ("started", "answered", "ended")


def _status_lines(out: Console, calls: Sequence[Mapping[str, Any]]) -> None:
    """The call id on a line of its own, then its state and times (a narrow terminal)."""
    for call in calls:
        state = str(call.get("state", ""))
        if call.get("endReason") and call.get("endReason") != state:
            state += f" ({call['endReason']})"
        times = f"started {clock(call.get('startedAt'))}"
        if call.get("endedAt"):
            times += f", ended {clock(call.get('endedAt'))}"
        out.print(Text(printable(call.get("callId", ""))), no_wrap=True, crop=False)
        out.print(Text(f"  {printable(state)}"))
        out.print(Text(f"  {times}"))


def latency_table(report: Mapping[str, Any]) -> None:
    scanned = report["recordsScanned"]
    if console().width < 60:  # the table needs 58 columns
        _latency_lines(report)
        return
    table = Table(title=f"{scanned} call{'s' * (scanned != 1)} scanned")
    table.add_column("")
    for name in ("count", "min", "p50", "p95", "max", "avg"):
        table.add_column(name, justify="right")
    for label, key in (("turn latency (ms)", "turnLatency"), ("listen wait (ms)", "listenWait")):
        s = report[key]
        table.add_row(label, str(s["count"]), str(s["minMs"]), str(s["p50Ms"]), str(s["p95Ms"]),
                      str(s["maxMs"]), str(s["avgMs"]))  # fmt: skip
    console().print(table)


def _latency_lines(report: Mapping[str, Any]) -> None:
    """The latency report as short lines (a narrow terminal)."""
    out = console()
    scanned = report["recordsScanned"]
    out.print(f"{scanned} call{'s' * (scanned != 1)} scanned")
    for label, key in (("turn latency", "turnLatency"), ("listen wait", "listenWait")):
        s = report[key]
        out.print(f"{label} (ms): {s['count']} counted")
        out.print(f"  p50 {s['p50Ms']}, p95 {s['p95Ms']}")
        out.print(f"  min {s['minMs']}, max {s['maxMs']}, avg {s['avgMs']}")
