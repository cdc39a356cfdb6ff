"""Tools for whoever writes workflows and manifests: what a workflow needs (node classes, model files),
converting a ComfyUI UI-format export to API format, and importing a workflow with a first draft of its
manifest entries. Plain functions; the CLI wires them up."""
