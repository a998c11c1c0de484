"""voicecall.flows.examples."""
