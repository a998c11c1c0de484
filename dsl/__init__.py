"""voicecall.dsl."""
