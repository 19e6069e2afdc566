"""Provenance and tracking: fingerprints, secrets masking, the run record, MLflow helpers."""
