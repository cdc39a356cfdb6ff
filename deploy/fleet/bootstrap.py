"""`comfyjobs fleet bootstrap`, as a pyinfra deploy: pyinfra INVENTORY deploy/fleet/bootstrap.py"""

from comfyjobs.fleet.deploys import bootstrap

bootstrap()
