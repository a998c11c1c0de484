"""Voice services: TTS, STT, responder, realtime bridges (one module per service)."""
