"""Voice services: TTS, STT, responder, realtime bridges (one module per service)."""

import logging

# The websockets library logs each handshake's request headers at DEBUG, the service's
# "Authorization: Bearer <key>" among them: a debug log must not hold an API key.
logging.getLogger("websockets.client").setLevel(logging.INFO)
