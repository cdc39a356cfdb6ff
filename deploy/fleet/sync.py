"""`comfyjobs fleet sync`, or `pyinfra INVENTORY deploy/fleet/sync.py` (from the folder holding manifests/,
workflows/ and install/configs/; not with --serial)."""

from comfyjobs.fleet.deploys import sync

sync()
