"""Shipped hardware targets (YAML), loaded by ``watos.hardware.target.load_target``."""
