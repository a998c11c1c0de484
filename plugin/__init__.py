"""voicecall.plugin."""
