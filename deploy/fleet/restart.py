"""`comfyjobs fleet restart api|workers|comfyui|redis`, or
`pyinfra INVENTORY deploy/fleet/restart.py --data restart=workers` (not with --serial)."""

from comfyjobs.fleet.deploys import restart

restart()
