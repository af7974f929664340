"""Testing kit for sagas (placeholder until the lead lands the package)."""
