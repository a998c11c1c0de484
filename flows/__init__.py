"""voicecall.flows."""
