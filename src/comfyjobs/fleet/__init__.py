"""Running a fleet from one laptop (`comfyjobs fleet`): pyinfra deploys over SSH to the hosts of an
inventory (deploy/fleet/inventory.py), with roles redis, api and gpu."""
