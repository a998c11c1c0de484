"""voicecall.runtime."""
