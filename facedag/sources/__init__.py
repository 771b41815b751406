"""Getting footage in: fetching sources (guarded), video IO (probe, decode, encode), the demo sources."""
