"""Generated from protos/fleet/v1 by scripts/gen_protos.py. Do not edit."""
