"""`comfyjobs fleet status`, or `pyinfra INVENTORY deploy/fleet/status.py`."""

from comfyjobs.fleet.deploys import status

status()
