"""voicecall.compiler."""
