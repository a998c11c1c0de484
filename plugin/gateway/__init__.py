"""The OpenClaw Gateway: protocol 4 (``protocol``), auth (``auth``), the WebSocket server
(``server``), the `voicecall gateway` host (``runner``) and the client (``client``)."""
