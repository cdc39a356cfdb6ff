"""Distinct exit codes, so scripts and supervisors can tell failures apart."""

OK = 0
ERROR = 1  # unexpected
USAGE = 2  # argparse's own
CONFIG = 3  # invalid settings or manifests
COMFYUI = 4  # ComfyUI could not be started
QUEUE = 5  # Redis / the queue unavailable
CHILD_DIED = 6  # `up`: a supervised process exited on its own
NOT_READY = 7  # `doctor`: a workflow cannot run (missing nodes or models)
CATALOG = 8  # `catalog`: no such version (never published, pruned, or an ambiguous prefix)
