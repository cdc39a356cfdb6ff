"""`comfyjobs fleet logs`, or `pyinfra INVENTORY deploy/fleet/logs.py`."""

from comfyjobs.fleet.deploys import logs

logs()
