"""Config schemas, the enums and ranges that are the single source of truth, and the cross-field rules."""
