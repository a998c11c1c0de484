"""voicecall.runtime.providers: one adapter per carrier (webhooks in, REST out)."""
