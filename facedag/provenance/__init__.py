"""Marking every output as synthetic: consent, the record, the watermark, C2PA, verify."""
