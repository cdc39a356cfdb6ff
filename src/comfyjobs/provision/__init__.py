"""Model provisioning: `models.ini` says which model files go in which ComfyUI folder; this fetches them."""
