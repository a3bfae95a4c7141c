"""Text cleaning: Unicode repair, whitespace and control characters, PII redaction."""
