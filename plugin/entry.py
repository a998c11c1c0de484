"""The plugin's entry point: ``register(api)``, as OpenClaw's voice-call plugin registers.

Published as the ``voice-call`` entry point of the ``voicecall.plugins`` group, so any Python
host implementing :class:`~voicecall.plugin.host.PluginApi` loads it the way `voicecall
gateway` does::

    from importlib.metadata import entry_points
    (ep,) = entry_points(group="voicecall.plugins", name="voice-call")
    ep.load()(api)

It registers the Gateway methods (with their scopes), the ``voice_call`` agent tool, the
``voicecall`` CLI commands and the ``voicecall`` service (the runtime, started and stopped by
the host). A metadata pass (``registration_mode != "full"``) registers everything but the
service, so that a host can list what the plugin offers without starting anything.
"""

from __future__ import annotations

from typing import Any

from voicecall.plugin.host import PluginApi, Service, Tool, ToolContext
from voicecall.plugin.methods import register_methods
from voicecall.plugin.service import VoiceCallService
from voicecall.plugin.tool import make_tool

PLUGIN_ID = "voice-call"
SERVICE_ID = "voicecall"


def _cli(group: Any) -> None:
    # Imported when the host builds its CLI: the Gateway process never needs click commands.
    from voicecall.plugin.cli_calls import register_calls_cli

    register_calls_cli(group)


def register(api: PluginApi) -> None:
    """Makes the original plugin's registrations against ``api``."""
    service = VoiceCallService(api.plugin_config, config_path=api.config_path,
                               logger=api.logger, emit=api.emit)  # fmt: skip
    register_methods(api, service)

    def tool(context: ToolContext) -> Tool:
        return make_tool(service, context)

    api.register_tool(tool)
    api.register_cli(_cli, commands=["voicecall"])
    if api.registration_mode == "full":
        api.register_service(Service(id=SERVICE_ID, start=service.start, stop=service.stop))
