"""voicecall.runtime.carrier: the mock carrier (a loopback fake of the three providers)."""
