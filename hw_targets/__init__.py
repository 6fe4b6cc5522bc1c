"""Shipped hardware targets (YAML), loaded by ``watos.hardware.load_target``."""
