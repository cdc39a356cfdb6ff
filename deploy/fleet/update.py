"""`comfyjobs fleet update [--ref REF]`, or `pyinfra INVENTORY deploy/fleet/update.py --data ref=REF`
(not with --serial: the deploy takes the hosts one at a time itself)."""

from comfyjobs.fleet.deploys import update

update()
