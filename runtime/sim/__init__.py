"""The mock carrier, caller scripts, simulate and flow tests: what runs calls without a carrier."""
